//! Pool results as `std::future::Future`s.

use super::{SLICE, blocking_slices};
use crate::error::Result;
use crate::pool::{AsyncResult, TaskFuture};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

/// Waits on tokio's blocking pool, in [`SLICE`]s, until `wait(r, SLICE)`
/// says the result is ready; returns it.
async fn ready<R: Send + 'static>(r: R, wait: fn(&R, Duration) -> bool) -> R {
    let mut r = Some(r);
    blocking_slices(move || {
        if r.as_ref().is_some_and(|r| wait(r, SLICE)) {
            r.take()
        } else {
            None
        }
    })
    .await
}

impl<T: Send + 'static> IntoFuture for AsyncResult<T> {
    type Output = Result<T>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

    /// `result.await` is [`get`](AsyncResult::get) without blocking the
    /// runtime: the wait runs on tokio's blocking pool in 100 ms slices
    /// (panics outside a tokio runtime).
    ///
    /// Cancel safety: dropping the future drops the result with it (as
    /// dropping the `AsyncResult` does); its blocking slice ends within
    /// 100 ms.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { ready(self, AsyncResult::wait_timeout).await.get() })
    }
}

impl<T: Send + 'static> IntoFuture for TaskFuture<T> {
    type Output = Result<T>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

    /// `future.await` is [`result`](TaskFuture::result) without blocking
    /// the runtime, as for [`AsyncResult`].
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { ready(self, TaskFuture::wait_timeout).await.result() })
    }
}
