//! The accept loop survives running out of file descriptors: it logs, backs off and retries,
//! and the client that was waiting in the backlog is served once a descriptor is free.
//!
//! This test lowers the process's open-files limit, so it lives alone in its own test binary.

mod common;

use std::fs::File;
use std::time::Duration;

use common::*;

fn set_nofile(soft: libc::rlim_t, hard: libc::rlim_t) {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

fn get_nofile() -> (libc::rlim_t, libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0);
    (lim.rlim_cur, lim.rlim_max)
}

#[tokio::test]
async fn accept_backs_off_on_emfile_and_recovers() {
    let s = start(options().build().unwrap()).await;
    let (soft, hard) = get_nofile();
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::rlim_t>().ok())
        .max()
        .unwrap();
    set_nofile(highest + 32, hard);

    // Use up every descriptor, then free exactly one for the client's socket.
    let mut hog = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => hog.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
    }
    assert!(!hog.is_empty());
    hog.pop();
    let mut client = kim_tcp::connect(&s.addr, &no_heartbeat())
        .await
        .expect("the client's socket takes the last descriptor");
    client.send_text("patient").await.unwrap();

    // The server cannot accept: it reports errors and backs off instead of spinning or dying.
    tokio::time::timeout(EVENT, async {
        while s.handle.stats().accept_errors < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("accept errors are counted");
    let errors_before = s.handle.stats().accept_errors;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let spin = s.handle.stats().accept_errors - errors_before;
    assert!(spin < 20, "the accept loop spins: {spin} errors in 50 ms");

    // Free the descriptors: the waiting client is accepted and served.
    drop(hog);
    set_nofile(soft, hard);
    let ok = read(&mut client)
        .await
        .expect("login answered after recovery");
    assert_eq!(&ok.payload[..], b"ok");
    client.send_text("after").await.unwrap();
    assert_eq!(&read(&mut client).await.unwrap().payload[..], b"after");
    assert_eq!(s.handle.stats().logins, 1);
}
