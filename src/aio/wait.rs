//! Awaitable twin of `connection::wait`.

use super::Readable;
use crate::connection::Waitable;
use crate::error::Result;
use std::time::Duration;

/// Awaitable [`connection::wait`](crate::connection::wait): waits until at
/// least one of `objects` ([`Connection`](crate::Connection)s, queues,
/// [`Listener`](crate::Listener)s, process sentinels, any
/// [`Waitable`]) is ready, or until `timeout` passes, and returns the
/// positions of the ready ones, in order (empty when the time ran out).
///
/// Each object's descriptor is registered with tokio's reactor for the
/// length of the call: no thread, no polling. A queue is *armed* first (as
/// the blocking `wait` does), so the next producer signals it.
///
/// # Errors
///
/// [`Error::Io`](crate::Error::Io) when a descriptor cannot be registered.
///
/// # Panics
///
/// Outside a tokio runtime.
///
/// # Cancel safety
///
/// Cancel safe: it only waits; nothing is received.
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use multiproc::Pipe;
/// use std::time::Duration;
///
/// let (a_rx, _a_tx) = Pipe::new()?;
/// let (b_rx, b_tx) = Pipe::new()?;
/// assert!(multiproc::aio::wait(&[&a_rx, &b_rx], Some(Duration::ZERO)).await?.is_empty());
/// b_tx.send(&"ready")?;
/// assert_eq!(multiproc::aio::wait(&[&a_rx, &b_rx], None).await?, [1]);
/// # Ok::<(), multiproc::Error>(())
/// # }).unwrap();
/// ```
pub async fn wait<'a, W, I>(objects: I, timeout: Option<Duration>) -> Result<Vec<usize>>
where
    W: Waitable + ?Sized + 'a,
    I: IntoIterator<Item = &'a W>,
{
    let objects: Vec<&W> = objects.into_iter().collect();
    if objects.is_empty() && timeout.is_none() {
        // As the blocking `wait`: nothing could ever become ready.
        return Ok(Vec::new());
    }
    let wait = async {
        // Register first, then look (which arms the queues): an event after
        // the look wakes the reactor.
        let regs = objects
            .iter()
            .map(|o| Readable::new(o.as_fd()))
            .collect::<Result<Vec<_>>>()?;
        loop {
            let ready = crate::connection::wait(objects.iter().copied(), Some(Duration::ZERO))?;
            if !ready.is_empty() {
                return Ok(ready);
            }
            std::future::poll_fn(|cx| {
                let mut any = false;
                for r in &regs {
                    match r.poll_ready(cx) {
                        std::task::Poll::Ready(Ok(())) => any = true,
                        std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                        std::task::Poll::Pending => {}
                    }
                }
                if any {
                    std::task::Poll::Ready(Ok(()))
                } else {
                    std::task::Poll::Pending
                }
            })
            .await?;
        }
    };
    match timeout {
        None => wait.await,
        Some(t) => match tokio::time::timeout(t, wait).await {
            Ok(r) => r,
            Err(_) => Ok(Vec::new()),
        },
    }
}
