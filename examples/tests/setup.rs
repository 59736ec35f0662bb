//! What runs where before a server serves: `before_serving` in the serving process only (never
//! in a worker of process mode), `run` serving in every process, and a failed setup step
//! failing the start with what went wrong.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kim_core::{Backend, DefaultAcceptor, DefaultServer, Dispatch, ServerError, ServerOptions};
use kim_examples::EchoListener;

/// Where the serving process and the workers leave a mark when their setup runs.
const MARKERS: &str = "KIM_SETUP_TEST_MARKERS";

/// An echo server over TCP with two workers (this test binary, entered at [`worker_main`]),
/// whose `before_serving` leaves a file named after its process id in `dir`.
fn server(dir: PathBuf) -> DefaultServer<kim_tcp::TcpUpgrader, DefaultAcceptor, EchoListener, ()> {
    let options = ServerOptions::builder()
        .backend(Backend::UnixDatagram {
            workers: 2,
            ipc_max_size: Backend::DEFAULT_IPC_MAX_SIZE,
            dispatch: Dispatch::RoundRobin,
        })
        .worker_command(common::this_binary_as_worker("worker_main"))
        .build()
        .unwrap();
    DefaultServer::new(kim_tcp::TcpUpgrader, EchoListener)
        .with_options(options)
        .before_serving(async move { mark(&dir) })
}

fn mark(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join(std::process::id().to_string()), b"before_serving")
}

/// Not a test of its own: the workers of the process-mode test run this test binary with
/// `worker_main --exact`, and here they serve their master through `run`. In a test run it
/// returns at once.
#[test]
fn worker_main() {
    if !kim_core::ipc::is_worker() {
        return;
    }
    let dir = PathBuf::from(std::env::var_os(MARKERS).expect("the test names the directory"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let serve = |_| async { Ok::<(), ServerError>(()) };
    let served = rt.block_on(server(dir).run("127.0.0.1:0", serve));
    served.expect("the worker served its master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_serving_runs_in_the_serving_process_and_never_in_a_worker() {
    let dir = std::env::temp_dir().join(format!("kim-setup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Inherited by the workers, which build the same server in `worker_main`.
    std::env::set_var(MARKERS, &dir);
    let handle = server(dir.clone()).start("127.0.0.1:0").await.unwrap();
    let addr = handle.local_addr().to_string();
    // Messages echoed through both workers (round-robin): both have built their server.
    let mut c = kim_tcp::connect(&addr, &kim_client::ClientOptions::default())
        .await
        .unwrap();
    for i in 0..4 {
        c.send_text(format!("message {i}")).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(10), c.read())
            .await
            .expect("an echo in time")
            .expect("an echo");
        assert_eq!(&echo.payload[..], format!("message {i}").as_bytes());
    }
    let pids = handle.worker_pids();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| p != 0), "both workers run: {pids:?}");
    handle.shutdown(Duration::from_secs(5)).await;
    let marks: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        marks,
        [std::process::id().to_string()],
        "only the serving process ran before_serving (workers {pids:?})"
    );
}

#[tokio::test]
async fn a_failed_setup_step_fails_the_start_and_says_why() {
    let refused = DefaultServer::new(kim_tcp::TcpUpgrader, EchoListener)
        .before_serving(async { Err::<(), _>("the database is not there") })
        .start("127.0.0.1:0")
        .await;
    let e = refused.expect_err("the start fails");
    assert!(matches!(e, ServerError::Setup(_)), "{e:?}");
    assert!(e.to_string().contains("the database is not there"), "{e}");

    let refused = DefaultServer::new(kim_tcp::TcpUpgrader, EchoListener)
        .with_cluster_connect(async { Err::<kim_nats::NatsCluster, _>("no broker at all") })
        .start("127.0.0.1:0")
        .await;
    let e = refused.expect_err("the start fails");
    assert!(e.to_string().contains("no broker at all"), "{e}");
}

#[tokio::test]
async fn a_debug_address_without_a_debug_service_fails_the_start() {
    let options = ServerOptions::builder()
        .debug_listen("127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    let refused = DefaultServer::new(kim_tcp::TcpUpgrader, EchoListener)
        .with_options(options)
        .start("127.0.0.1:0")
        .await;
    let e = refused.expect_err("nothing can serve the debug address");
    assert!(e.to_string().contains("with_debug"), "{e}");
}
