//! Awaitable twins of `Listener::accept` and `Client::connect`.

use super::{Readable, unwrap_blocking};
use crate::connection::{Client, Connection, Listener, ToAddress};
use crate::error::Result;

impl Listener {
    /// Awaitable [`accept`](Listener::accept): waits for a connection with
    /// the listening socket in the reactor, then accepts it and runs the
    /// authentication handshake (a few round trips, bounded by the
    /// listener's handshake timeout, on the calling thread).
    ///
    /// # Errors
    ///
    /// As [`accept`](Listener::accept).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a connection is accepted only in the poll that returns
    /// it.
    pub async fn accept_async(&self) -> Result<Connection> {
        let reg = Readable::new(self.socket_fd())?;
        reg.wait().await?;
        self.accept()
    }
}

impl Client {
    /// Awaitable [`Client::connect`]: connects and authenticates on
    /// tokio's blocking pool.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the connection once made (the peer sees it
    /// closed).
    pub async fn connect_async(addr: impl ToAddress, authkey: Option<&[u8]>) -> Result<Connection> {
        let addr = addr.to_address()?;
        let key = authkey.map(<[u8]>::to_vec);
        unwrap_blocking(
            tokio::task::spawn_blocking(move || Client::connect(addr, key.as_deref())).await,
        )
    }
}
