//! Accepting and serving HTTP/1.1 connections with limits, so slow or idle clients cannot hold
//! the server: a cap on open connections (past it a connection is answered 503 and closed), a
//! deadline for each request's headers, one for its body, and one for an idle keep-alive
//! connection. axum's own `serve` has none of these, so connections are served here with hyper.
//!
//! The header and idle deadlines are enforced where the bytes are read ([`TimedIo`]): while no
//! request is in flight, a read that would wait past the deadline fails and hyper drops the
//! connection. A request is in flight from its parsed head until its response body is written
//! (so a long synchronous wait or an event stream is never cut). The body deadline wraps the
//! request body ([`TimedBody`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// The limits of `serve`, all configurable (`gallop serve --max-connections` and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; one more is answered 503 (code 3040) and closed.
    pub max_connections: usize,
    /// A request's headers must arrive within this, from its first byte (or from the moment a
    /// new connection opens).
    pub header_read_timeout: Duration,
    /// A request's body must arrive within this, from its headers.
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// For a 2-core machine: a few hundred connections cost little memory each; headers take
    /// milliseconds on any real network; a 30 MB body needs 0.5 MB/s to arrive in 60 s.
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests (each is closed after its response) and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, _) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let router = router.clone();
                let closing = closing.subscribe();
                tokio::spawn(async move {
                    serve_connection(stream, router, limits, closing).await;
                    drop(slot);
                });
            }
            Err(_) => {
                tokio::spawn(refuse_connection(stream, limits.max_connections));
            }
        }
    }
    drop(listener);
    closing.send_replace(true);
    // Every connection holds a slot until it closes.
    let _all = slots
        .acquire_many(limits.max_connections as u32)
        .await
        .map_err(io::Error::other)?;
    Ok(())
}

/// Answers a connection over the cap with 503 in Cloudflare's envelope, then closes it.
async fn refuse_connection(mut stream: TcpStream, max: usize) {
    use tokio::io::AsyncWriteExt;
    let body = format!(
        "{{\"success\":false,\"errors\":[{{\"code\":3040,\"message\":\"Out of capacity: {max} \
         connections are open (the limit); retry shortly\"}}],\"messages\":[],\"result\":null}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    mut closing: watch::Receiver<bool>,
) {
    let phase = Arc::new(Mutex::new(Phase::new()));
    let io = TokioIo::new(TimedIo::new(stream, phase.clone(), limits));
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let guard = InFlight::start(phase.clone());
        let request = request.map(|body| Body::new(TimedBody::new(body, limits.body_read_timeout)));
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await?;
            Ok::<_, Infallible>(response.map(|body| GuardedBody {
                inner: body,
                _guard: guard,
            }))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection closed: {e}");
                }
                return;
            }
            _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => {
                connection.as_mut().graceful_shutdown();
                // Finish what is in flight; the select's first arm ends the loop.
                let _ = connection.as_mut().await;
                return;
            }
        }
    }
}

/// Where a connection is between requests, to know which read deadline applies.
#[derive(Debug)]
struct Phase {
    in_flight: usize,
    /// The head being read started then (a new connection counts as waiting for its first).
    head_since: Option<Instant>,
    /// The last response ended then, and nothing was read since.
    idle_since: Option<Instant>,
    /// The task of the last read that waited: a read may wait (without a deadline) while a
    /// request is in flight, and must be woken to arm the idle deadline once it ends.
    reader: Option<std::task::Waker>,
}

impl Phase {
    fn new() -> Phase {
        Phase {
            in_flight: 0,
            head_since: Some(Instant::now()),
            idle_since: None,
            reader: None,
        }
    }

    /// The instant a pending read must give up at, if one applies.
    fn read_deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight > 0 {
            return None;
        }
        match (self.head_since, self.idle_since) {
            (Some(head), _) => Some(head + limits.header_read_timeout),
            (None, Some(idle)) => Some(idle + limits.idle_timeout),
            (None, None) => None,
        }
    }

    fn bytes_read(&mut self) {
        if self.in_flight == 0 && self.head_since.is_none() {
            self.head_since = Some(Instant::now());
            self.idle_since = None;
        }
    }
}

/// Marks a request in flight from its head to the end of its response body.
struct InFlight(Arc<Mutex<Phase>>);

impl InFlight {
    fn start(phase: Arc<Mutex<Phase>>) -> InFlight {
        {
            let mut p = phase.lock().unwrap_or_else(|e| e.into_inner());
            p.in_flight += 1;
            p.head_since = None;
            p.idle_since = None;
        }
        InFlight(phase)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        p.in_flight = p.in_flight.saturating_sub(1);
        if p.in_flight == 0 {
            p.idle_since = Some(Instant::now());
            if let Some(reader) = p.reader.take() {
                reader.wake();
            }
        }
    }
}

/// The socket, with reads that fail once the phase's deadline passes.
struct TimedIo {
    inner: TcpStream,
    phase: Arc<Mutex<Phase>>,
    limits: ConnectionLimits,
    timer: Pin<Box<Sleep>>,
}

impl TimedIo {
    fn new(inner: TcpStream, phase: Arc<Mutex<Phase>>, limits: ConnectionLimits) -> TimedIo {
        TimedIo {
            inner,
            phase,
            limits,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.phase
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let deadline = {
                    let mut phase = this.phase.lock().unwrap_or_else(|e| e.into_inner());
                    phase.reader = Some(cx.waker().clone());
                    phase.read_deadline(&this.limits)
                };
                let Some(deadline) = deadline else {
                    return Poll::Pending;
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request headers within the header-read or idle timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The message a body that missed its deadline fails with; `http::body` answers 408 for it.
pub const BODY_TIMEOUT_MESSAGE: &str =
    "the request body did not arrive within the body-read timeout";

/// A request body that fails once its deadline passes.
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
}

impl TimedBody {
    fn new(inner: Incoming, limit: Duration) -> TimedBody {
        TimedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(io::Error::other)));
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                BODY_TIMEOUT_MESSAGE,
            )))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request in flight until it is written (or dropped).
struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
