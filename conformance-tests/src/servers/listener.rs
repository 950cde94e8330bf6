//! The accept loop and connection accounting shared by every test server.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// Connection counts a server keeps, so a case can assert reuse and limits.
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicUsize,
    active: AtomicUsize,
    max_active: AtomicUsize,
}

impl Stats {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    /// Connections open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
    /// The most connections open at once.
    pub fn max_active(&self) -> usize {
        self.max_active.load(Ordering::SeqCst)
    }
}

/// Decrements the active count when a connection's thread ends.
pub(crate) struct ActiveGuard(Arc<Stats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A listener on 127.0.0.1:0 whose connections are served by `serve`, one thread each.
pub(crate) struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub(crate) stats: Arc<Stats>,
}

impl Listener {
    pub(crate) fn start<F>(name: &str, serve: F) -> std::io::Result<Listener>
    where
        F: Fn(TcpStream, usize) + Send + Sync + 'static,
    {
        Self::start_on(name, 0, serve)
    }

    pub(crate) fn start_on<F>(name: &str, port: u16, serve: F) -> std::io::Result<Listener>
    where
        F: Fn(TcpStream, usize) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let serve = Arc::new(serve);
        let thread = {
            let (stop, stats) = (stop.clone(), stats.clone());
            thread::Builder::new()
                .name(format!("{name}-accept"))
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let _ = conn.set_nodelay(true);
                        let index = stats.accepted.fetch_add(1, Ordering::SeqCst);
                        let now = stats.active.fetch_add(1, Ordering::SeqCst) + 1;
                        stats.max_active.fetch_max(now, Ordering::SeqCst);
                        let guard = ActiveGuard(stats.clone());
                        let serve = serve.clone();
                        let spawned =
                            thread::Builder::new()
                                .name("test-conn".into())
                                .spawn(move || {
                                    let _guard = guard;
                                    serve(conn, index);
                                });
                        if spawned.is_err() {
                            // Out of threads: the connection is dropped and the case will see it.
                            continue;
                        }
                    }
                })?
        };
        Ok(Listener {
            addr,
            stop,
            thread: Some(thread),
            stats,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
