//! Awaitable twins of the connection operations.

use super::Readable;
use crate::connection::{Connection, Waitable};
use crate::error::Result;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::os::fd::AsFd;
use std::time::Duration;
use tokio::io::Interest;

impl Connection {
    /// Waits, without blocking the runtime, until a message (or the end of
    /// the stream) can be read.
    async fn readable_async(&self) -> Result<()> {
        let mut reg: Option<Readable> = None;
        loop {
            if self.ready_without_polling() || self.poll(Some(Duration::ZERO))? {
                return Ok(());
            }
            let r = match &reg {
                Some(r) => r,
                None => reg.insert(Readable::new(self.as_fd())?),
            };
            r.wait().await?;
        }
    }

    /// Awaitable [`recv`](Connection::recv): waits for a message with the
    /// socket registered in the reactor (no thread, no polling), then
    /// reads and decodes it.
    ///
    /// A message is read in one go once its first bytes are there: one
    /// larger than the socket buffer is finished with a blocking read, as
    /// fast as the peer sends the rest.
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv) ([`Error::Eof`](crate::Error::Eof) at
    /// the end of the stream).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the message is read only in the poll that returns it;
    /// a dropped `recv_async` leaves it for the next receive.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let (a, b) = multiproc::Pipe::new()?;
    /// a.send_async(&"hi").await?;
    /// assert_eq!(b.recv_async::<String>().await?, "hi");
    /// # Ok::<(), multiproc::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn recv_async<T: DeserializeOwned>(&self) -> Result<T> {
        self.readable_async().await?;
        self.recv()
    }

    /// Awaitable [`recv_bytes`](Connection::recv_bytes), as
    /// [`recv_async`](Self::recv_async).
    ///
    /// # Errors
    ///
    /// As [`recv_bytes`](Connection::recv_bytes).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv_async`](Self::recv_async).
    pub async fn recv_bytes_async(&self) -> Result<Vec<u8>> {
        self.readable_async().await?;
        self.recv_bytes()
    }

    /// [`recv_async`](Self::recv_async) that gives up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`](crate::Error::Timeout) when no message started to
    /// arrive in time; otherwise as [`recv`](Connection::recv).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv_async_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        match tokio::time::timeout(timeout, self.readable_async()).await {
            Ok(r) => r?,
            Err(_) => return Err(crate::Error::Timeout),
        }
        self.recv()
    }

    async fn writable_async(&self) -> Result<()> {
        let reg = Readable::with_interest(self.as_fd(), Interest::WRITABLE)?;
        reg.wait_writable().await
    }

    /// Awaitable [`send`](Connection::send): waits (in the reactor) until
    /// the socket has room, then writes the message.
    ///
    /// A message larger than the room in the socket buffer is finished with
    /// a blocking write, as fast as the peer reads.
    ///
    /// # Errors
    ///
    /// As [`send`](Connection::send).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the message is written only in the poll that returns;
    /// a dropped `send_async` sent nothing.
    pub async fn send_async<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.writable_async().await?;
        self.send(value)
    }

    /// Awaitable [`send_bytes`](Connection::send_bytes), as
    /// [`send_async`](Self::send_async).
    ///
    /// # Errors
    ///
    /// As [`send_bytes`](Connection::send_bytes).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`send_async`](Self::send_async).
    pub async fn send_bytes_async(&self, bytes: &[u8]) -> Result<()> {
        self.writable_async().await?;
        self.send_bytes(bytes)
    }
}
