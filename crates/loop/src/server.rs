//! [`Server`]: binds one listener per loop and runs the loops on threads.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::{Poll, Waker};
use socket2::{Domain, Socket as RawSocket, Type};

use crate::event_loop::{EventLoop, WAKER};
use crate::{Config, Handler};

/// A bound server, ready to [`Server::run`].
#[derive(Debug)]
pub struct Server {
    config: Arc<Config>,
    addr: SocketAddr,
    loops: Vec<(Poll, std::net::TcpListener)>,
    handle: Handle,
}

/// Stops a running [`Server`] from any thread.
#[derive(Debug, Clone)]
pub struct Handle {
    stop: Arc<AtomicBool>,
    wakers: Arc<[Waker]>,
}

impl Handle {
    /// Asks every loop to stop: each sends a close (1001, "server shutting
    /// down") to its connections, writes what it can without waiting, and
    /// returns; then [`Server::run`] returns.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        for waker in self.wakers.iter() {
            // A loop that cannot be woken has already stopped.
            let _ = waker.wake();
        }
    }
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) once per loop of
    /// [`Config::threads`]; the kernel spreads new connections over the
    /// listeners.
    pub fn bind(addr: SocketAddr, config: Config) -> io::Result<Server> {
        let threads = config.threads.max(1);
        if threads > 1 && !cfg!(unix) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "more than one loop needs SO_REUSEPORT, which this platform lacks",
            ));
        }
        let shared = threads > 1;
        let first = listen(addr, shared)?;
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..threads {
            listeners.push(listen(addr, shared)?);
        }
        let mut loops = Vec::with_capacity(threads);
        let mut wakers = Vec::with_capacity(threads);
        for listener in listeners {
            let poll = Poll::new()?;
            wakers.push(Waker::new(poll.registry(), WAKER)?);
            loops.push((poll, listener));
        }
        Ok(Server {
            config: Arc::new(config),
            addr,
            loops,
            handle: Handle {
                stop: Arc::new(AtomicBool::new(false)),
                wakers: wakers.into(),
            },
        })
    }

    /// The address bound (with the port chosen, when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops the server.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Runs every loop, each on its own thread with a handler made by
    /// `new_handler` there, until [`Handle::stop`]; returns the first loop's
    /// error, if one failed.
    pub fn run<H, F>(self, new_handler: F) -> io::Result<()>
    where
        H: Handler,
        F: Fn() -> H + Sync,
    {
        let Server {
            config,
            loops,
            handle,
            ..
        } = self;
        std::thread::scope(|scope| {
            let mut threads = Vec::with_capacity(loops.len());
            for (i, (poll, listener)) in loops.into_iter().enumerate() {
                let config = Arc::clone(&config);
                let stop = Arc::clone(&handle.stop);
                // A loop that ends for any reason (stopped, failed, or its
                // handler panicked) stops the others.
                let guard = StopOnExit(handle.clone());
                let new_handler = &new_handler;
                let spawned = std::thread::Builder::new()
                    .name(format!("sockeye-loop-{i}"))
                    .spawn_scoped(scope, move || {
                        let _guard = guard;
                        let listener = mio::net::TcpListener::from_std(listener);
                        EventLoop::new(poll, listener, config, stop, new_handler())?.run()
                    });
                match spawned {
                    Ok(thread) => threads.push(thread),
                    Err(error) => {
                        // The loops already running would keep the scope open.
                        handle.stop();
                        return Err(error);
                    }
                }
            }
            let mut result = Ok(());
            for thread in threads {
                let outcome = thread
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("an event loop panicked")));
                if let (Err(error), Ok(())) = (outcome, &result) {
                    result = Err(error);
                }
            }
            result
        })
    }
}

/// Stops the server when dropped: on a loop's return and on its panic.
struct StopOnExit(Handle);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A non-blocking listener on `addr`; `shared`: other listeners of this
/// server bind the same port.
fn listen(addr: SocketAddr, shared: bool) -> io::Result<std::net::TcpListener> {
    let socket = RawSocket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if shared {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = shared;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
