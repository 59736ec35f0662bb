//! A TCP proxy on 127.0.0.1 between clients and a server, to lose connections as networks do:
//! `cut` resets every connection through it (no FIN and no close frame: both ends see their
//! connection lost), and while `refusing`, new connections are reset at once. Shared by the
//! examples' and the chat's tests (`#[path]`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// See the module's docs.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<String>>>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    refusing: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy to `target`.
    pub async fn to(target: impl ToString) -> Proxy {
        let proxy = Proxy::start().await;
        proxy.forward_to(&target.to_string());
        proxy
    }

    /// Listens on a free port; forwards nothing until [`Proxy::forward_to`] (for a server
    /// that must be told the proxy's port before it starts).
    pub async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(None::<String>));
        let links = Arc::new(Mutex::new(Vec::new()));
        let refusing = Arc::new(AtomicBool::new(false));
        let (t, l, r) = (target.clone(), links.clone(), refusing.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                // Every socket it drops is reset, not closed.
                reset_on_drop(&client);
                let to = t.lock().unwrap().clone();
                let Some(to) = to.filter(|_| !r.load(Ordering::Relaxed)) else {
                    continue;
                };
                l.lock().unwrap().push(tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(&to).await else {
                        return;
                    };
                    reset_on_drop(&upstream);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }));
            }
        });
        Proxy {
            addr,
            target,
            links,
            refusing,
        }
    }

    /// Forwards new connections to `addr`.
    pub fn forward_to(&self, addr: &str) {
        *self.target.lock().unwrap() = Some(addr.to_string());
    }

    /// Resets every connection open now.
    pub fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// Resets new connections at once (`true`) or forwards them again (`false`).
    pub fn refusing(&self, on: bool) {
        self.refusing.store(on, Ordering::Relaxed);
    }
}

/// Makes the socket's close a reset (SO_LINGER with a zero timeout; the sockets are
/// non-blocking, so the close does not wait).
pub fn reset_on_drop(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this process owns, with a valid option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
