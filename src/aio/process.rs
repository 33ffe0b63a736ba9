//! Awaitable twin of `Process::join`.

use super::Readable;
use crate::error::Result;
use crate::process::Process;

impl<R: serde::de::DeserializeOwned> Process<R> {
    /// Awaitable [`join`](Process::join): waits for the child to exit
    /// without blocking the runtime. The child's pidfd is registered with
    /// the reactor; the kernel makes it readable when the child exits, and
    /// the child is then reaped as `join` does.
    ///
    /// # Errors
    ///
    /// As [`join`](Process::join) (a process never started is an error).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits; the child is reaped in the poll that
    /// returns.
    ///
    /// # Examples
    ///
    /// ```
    /// fn nap() { std::thread::sleep(std::time::Duration::from_millis(50)); }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let mut p = multiproc::Process::new(nap, ());
    /// p.start()?;
    /// p.join_async().await?;
    /// assert_eq!(p.exitcode(), Some(0));
    /// # Ok::<(), multiproc::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn join_async(&mut self) -> Result<()> {
        let reg = Readable::new(self.sentinel()?)?;
        loop {
            if self.join_deadline(std::time::Instant::now())? {
                return Ok(());
            }
            reg.wait().await?;
        }
    }
}
