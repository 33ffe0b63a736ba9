//! `Listener` and `Client`: connections between unrelated processes,
//! wire-compatible with Python's `multiprocessing.connection`.

use super::{Connection, Framing, auth};
use crate::error::{Error, Result};
use crate::sys;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{self as unix, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long [`Listener::accept`] waits for a connecting peer to complete the
/// authkey handshake, unless changed with
/// [`Listener::set_handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a [`Listener`] listens and a [`Client`] connects.
///
/// Parsed from a string with [`str::parse`] (or passed as a string wherever
/// a [`ToAddress`] is taken):
///
/// | string | address |
/// | --- | --- |
/// | `"127.0.0.1:6000"`, `"[::1]:6000"`, `"localhost:6000"` | [`Address::Tcp`] (host names are resolved; the first result is used) |
/// | `"@name"` or `"\0name"` | [`Address::Abstract`] with the name `name` |
/// | anything else, e.g. `"/tmp/app.sock"` | [`Address::Unix`] (a socket file) |
///
/// The abstract form follows the convention of `ss(8)`: `@` stands for the
/// leading NUL byte of a Linux abstract socket name. Python writes the same
/// address as the string `"\0name"`, which is accepted too.
///
/// # Examples
/// ```
/// use multiproc::Address;
///
/// let tcp: Address = "127.0.0.1:6000".parse()?;
/// assert!(matches!(tcp, Address::Tcp(a) if a.port() == 6000));
/// let unix: Address = "/tmp/app.sock".parse()?;
/// assert_eq!(unix, Address::Unix("/tmp/app.sock".into()));
/// let abs: Address = "@app-1234".parse()?;
/// assert_eq!(abs, Address::Abstract(b"app-1234".to_vec()));
/// assert_eq!(abs.to_string(), "@app-1234");
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A TCP address (Python's `AF_INET`/`AF_INET6`, a `(host, port)` tuple).
    Tcp(SocketAddr),
    /// A Unix socket file (Python's `AF_UNIX` with a path).
    Unix(PathBuf),
    /// A Linux abstract socket name, without the leading NUL byte (Python's
    /// `AF_UNIX` with an address starting with `"\0"`).
    Abstract(Vec<u8>),
}

impl Address {
    fn parse_str(s: &str) -> Result<Address> {
        if s.is_empty() {
            return Err(Error::Address("empty address".into()));
        }
        if let Some(name) = s.strip_prefix('@').or_else(|| s.strip_prefix('\0')) {
            if name.is_empty() {
                return Err(Error::Address("empty abstract socket name".into()));
            }
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        if s.starts_with(r"\\") {
            return Err(Error::Address(format!(
                "{s:?} is a Windows named-pipe address, which does not exist on this platform"
            )));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(a));
        }
        if let Some((host, port)) = s.rsplit_once(':') {
            if !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok() {
                let mut found = s
                    .to_socket_addrs()
                    .map_err(|e| Error::Address(format!("cannot resolve {s:?}: {e}")))?;
                return found
                    .next()
                    .map(Address::Tcp)
                    .ok_or_else(|| Error::Address(format!("{s:?} resolved to no address")));
            }
        }
        Ok(Address::Unix(PathBuf::from(s)))
    }

    fn unix_addr(&self) -> io::Result<Option<unix::SocketAddr>> {
        match self {
            Address::Tcp(_) => Ok(None),
            Address::Unix(p) => unix::SocketAddr::from_pathname(p).map(Some),
            Address::Abstract(name) => unix::SocketAddr::from_abstract_name(name).map(Some),
        }
    }
}

impl std::str::FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Address> {
        Address::parse_str(s)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Tcp(a)
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Self {
        Address::Unix(p)
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Self {
        Address::Unix(p.to_path_buf())
    }
}

/// Something that names an [`Address`]: an `Address`, a string (see
/// [`Address`] for the forms), a [`SocketAddr`], or a [`Path`] of a socket
/// file. Like [`ToSocketAddrs`], it lets [`Listener::bind`] and
/// [`Client::connect`] take any of these.
///
/// # Examples
/// ```
/// use multiproc::{Address, ToAddress};
/// use std::path::Path;
///
/// assert_eq!(Path::new("/run/x.sock").to_address()?, Address::Unix("/run/x.sock".into()));
/// assert!("".to_address().is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait ToAddress {
    /// The address named.
    ///
    /// # Errors
    /// [`Error::Address`] when a string is empty, names a Windows pipe, or a
    /// host name cannot be resolved.
    fn to_address(&self) -> Result<Address>;
}

impl ToAddress for Address {
    fn to_address(&self) -> Result<Address> {
        Ok(self.clone())
    }
}

impl ToAddress for str {
    fn to_address(&self) -> Result<Address> {
        Address::parse_str(self)
    }
}

impl ToAddress for String {
    fn to_address(&self) -> Result<Address> {
        Address::parse_str(self)
    }
}

impl ToAddress for SocketAddr {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Tcp(*self))
    }
}

impl ToAddress for Path {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Unix(self.to_path_buf()))
    }
}

impl ToAddress for PathBuf {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Unix(self.clone()))
    }
}

impl<T: ToAddress + ?Sized> ToAddress for &T {
    fn to_address(&self) -> Result<Address> {
        (**self).to_address()
    }
}

enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A bound, listening socket that hands out authenticated [`Connection`]s
/// (Python's `multiprocessing.connection.Listener`).
///
/// Connections accepted here speak Python's wire format, so the peer may be
/// a Python program using `multiprocessing.connection.Client` with the same
/// authkey, or this crate's [`Client`]. They are ordinary [`Connection`]s:
/// `send_bytes`/`recv_bytes`/`poll` and typed `send`/`recv` (this crate's
/// serde encoding, which a Python peer sees as opaque bytes) all work, but
/// OS handles cannot travel over them (sending a value holding a
/// [`Handle`](crate::Handle) is an [`Error::Encode`]).
///
/// With an authkey, every accepted peer must pass the HMAC challenge of
/// Python's `deliver_challenge`/`answer_challenge` in both directions
/// (HMAC-SHA256 as in Python 3.12+, and the HMAC-MD5 answers of Python
/// ≤ 3.11 are accepted). Unlike Python, an empty authkey `Some(b"")` still
/// runs the handshake (as Python 3.12+ does for its `Client`); `None` skips
/// it.
///
/// A Unix socket file is removed when the listener is closed or dropped (by
/// the process that bound it). Abstract names vanish by themselves.
///
/// # Examples
/// ```
/// use multiproc::{Client, Listener};
///
/// let listener = Listener::bind("127.0.0.1:0", Some(b"secret"))?;
/// let addr = listener.address().clone();
/// let t = std::thread::spawn(move || -> multiproc::Result<Vec<u8>> {
///     let conn = Client::connect(&addr, Some(b"secret"))?;
///     conn.send_bytes(b"hello")?;
///     conn.recv_bytes()
/// });
/// let conn = listener.accept()?;
/// let msg = conn.recv_bytes()?;
/// conn.send_bytes(&msg.to_ascii_uppercase())?;
/// assert_eq!(t.join().unwrap()?, b"HELLO");
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Listener {
    socket: Socket,
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Option<Duration>,
    /// The socket file to remove on close, and the process that bound it.
    unlink: Option<(PathBuf, u32)>,
    /// The address of the peer accepted last, if it had one.
    last_accepted: std::sync::Mutex<Option<Address>>,
}

impl Listener {
    /// Binds to `addr` and starts listening. With `authkey`, every accepted
    /// connection must pass the handshake; with `None`, none is run.
    ///
    /// TCP port `0` picks a free port; [`address`](Self::address) tells
    /// which.
    ///
    /// # Errors
    /// [`Error::Address`] for an address that cannot be understood;
    /// [`Error::Io`] when binding fails, e.g. `AddrInUse` when another
    /// socket already has the address (a stale socket file is not removed).
    pub fn bind(addr: impl ToAddress, authkey: Option<&[u8]>) -> Result<Listener> {
        let address = addr.to_address()?;
        let (socket, address, unlink) = match &address {
            Address::Tcp(a) => {
                let l = TcpListener::bind(a)?;
                let bound = Address::Tcp(l.local_addr()?);
                (Socket::Tcp(l), bound, None)
            }
            Address::Unix(p) => {
                let l = UnixListener::bind(p)?;
                let unlink = Some((p.clone(), std::process::id()));
                (Socket::Unix(l), address.clone(), unlink)
            }
            Address::Abstract(_) => {
                let sa = address.unix_addr()?.expect("unix address");
                (
                    Socket::Unix(UnixListener::bind_addr(&sa)?),
                    address.clone(),
                    None,
                )
            }
        };
        Ok(Listener {
            socket,
            address,
            authkey: authkey.map(<[u8]>::to_vec),
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            unlink,
            last_accepted: std::sync::Mutex::new(None),
        })
    }

    /// A listener on an already bound and listening Unix socket (one that
    /// another process bound, handed over as `fd`), with no handshake and
    /// nothing to remove when dropped (`address` is abstract).
    pub(crate) fn from_abstract(fd: OwnedFd, address: Address) -> Listener {
        Listener {
            socket: Socket::Unix(UnixListener::from(fd)),
            address,
            authkey: None,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            unlink: None,
            last_accepted: std::sync::Mutex::new(None),
        }
    }

    /// The address this listener is bound to (with the real port for a TCP
    /// port `0`).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The address of the peer accepted last (Python's `last_accepted`):
    /// for TCP its IP address and port; for a Unix socket the peer's own
    /// bound address, which clients rarely have, so usually `None`. `None`
    /// also before the first [`accept`](Self::accept). Set as soon as a
    /// peer is accepted, before the authkey handshake.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Address, Client, Listener};
    /// let listener = Listener::bind("127.0.0.1:0", None)?;
    /// assert_eq!(listener.last_accepted(), None);
    /// let addr = listener.address().clone();
    /// let t = std::thread::spawn(move || Client::connect(&addr, None));
    /// let _conn = listener.accept()?;
    /// let client = t.join().unwrap()?;
    /// let Some(Address::Tcp(peer)) = listener.last_accepted() else { panic!() };
    /// assert!(peer.ip().is_loopback());
    /// # drop(client);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn last_accepted(&self) -> Option<Address> {
        self.last_accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets how long [`accept`](Self::accept) lets a peer take over the
    /// authkey handshake (`None`: no limit, as in Python). The default is
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]. A peer that is too slow gets its
    /// connection closed and `accept` returns [`Error::Timeout`].
    pub fn set_handshake_timeout(&mut self, timeout: Option<Duration>) {
        self.handshake_timeout = timeout;
    }

    /// The handshake limit set by
    /// [`set_handshake_timeout`](Self::set_handshake_timeout).
    pub fn handshake_timeout(&self) -> Option<Duration> {
        self.handshake_timeout
    }

    /// Waits for the next peer and returns the connection to it, after the
    /// authkey handshake when the listener has a key.
    ///
    /// A failed handshake drops that one connection and returns the error;
    /// the listener stays usable for the next peer.
    ///
    /// # Errors
    /// [`Error::Authentication`] when the peer has a different key or does
    /// not speak the protocol (it is told `#FAILURE#` when it got that far);
    /// [`Error::Timeout`] when it does not finish the handshake within the
    /// [`handshake_timeout`](Self::handshake_timeout); [`Error::Eof`] when
    /// it hangs up during the handshake; [`Error::Io`] for OS errors.
    pub fn accept(&self) -> Result<Connection> {
        let (fd, peer): (OwnedFd, Option<Address>) = match &self.socket {
            Socket::Tcp(l) => {
                let (s, peer) = l.accept()?;
                s.set_nodelay(true)?;
                (s.into(), Some(Address::Tcp(peer)))
            }
            Socket::Unix(l) => {
                let (s, peer) = l.accept()?;
                let peer = match (peer.as_pathname(), peer.as_abstract_name()) {
                    (Some(path), _) => Some(Address::Unix(path.to_path_buf())),
                    (None, Some(name)) => Some(Address::Abstract(name.to_vec())),
                    (None, None) => None,
                };
                (s.into(), peer)
            }
        };
        *self.last_accepted.lock().unwrap_or_else(|e| e.into_inner()) = peer;
        let conn = Connection::with_framing(fd, true, true, Framing::Python);
        if let Some(key) = &self.authkey {
            let deadline = self.handshake_timeout.and_then(sys::deadline_after);
            auth::deliver_challenge_impl(&conn, key, deadline)?;
            auth::answer_challenge_impl(&conn, key, deadline)?;
        }
        Ok(conn)
    }

    /// Closes the listening socket and removes its socket file. Dropping the
    /// listener does the same. Connections already accepted stay open.
    ///
    /// # Examples
    /// ```
    /// let dir = std::env::temp_dir().join(format!("mp-doc-close-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("s.sock");
    /// let l = multiproc::Listener::bind(path.as_path(), None)?;
    /// assert!(path.exists());
    /// l.close();
    /// assert!(!path.exists());
    /// # std::fs::remove_dir(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) {}

    /// The listening socket, for a reactor to watch (`accept_async`).
    #[cfg(feature = "tokio")]
    pub(crate) fn socket_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match &self.socket {
            Socket::Tcp(l) => l.as_fd(),
            Socket::Unix(l) => l.as_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some((path, pid)) = self.unlink.take() {
            // Only the binding process removes the file: a copy of this
            // object in a forked child must not pull it from under us.
            if pid == std::process::id() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.socket {
            Socket::Tcp(l) => l.as_fd(),
            Socket::Unix(l) => l.as_fd(),
        }
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .finish()
    }
}

/// Connects to a [`Listener`], or to a Python
/// `multiprocessing.connection.Listener` (Python's `Client()`).
///
/// # Examples
/// ```
/// use multiproc::{Client, Listener};
///
/// let name = format!("@multiproc-doc-client-{}", std::process::id());
/// let listener = Listener::bind(name.as_str(), None)?;
/// let conn = Client::connect(name.as_str(), None)?;
/// conn.send(&vec![1u32, 2, 3])?;
/// let server_side = listener.accept()?;
/// assert_eq!(server_side.recv::<Vec<u32>>()?, [1, 2, 3]);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Connects to `addr` and, with `authkey`, runs the authkey handshake
    /// (answering the listener's challenge, then challenging it). Waits as
    /// long as it takes, like Python.
    ///
    /// # Errors
    /// [`Error::Address`] for an address that cannot be understood;
    /// [`Error::Io`] when connecting fails (e.g. `ConnectionRefused`);
    /// [`Error::Authentication`] when the keys differ or the listener does
    /// not speak the protocol; [`Error::Eof`] when the listener hangs up
    /// during the handshake (e.g. it wanted no authkey and closed).
    pub fn connect(addr: impl ToAddress, authkey: Option<&[u8]>) -> Result<Connection> {
        Self::connect_inner(&addr.to_address()?, authkey, None)
    }

    /// Like [`connect`](Self::connect), but gives up with [`Error::Timeout`]
    /// when connecting and authenticating together take longer than
    /// `timeout`.
    ///
    /// # Errors
    /// As for [`connect`](Self::connect), plus [`Error::Timeout`].
    ///
    /// # Examples
    /// ```
    /// use multiproc::Client;
    /// use std::time::Duration;
    ///
    /// // Nothing listens there: the connection is refused at once.
    /// let name = format!("@multiproc-doc-nobody-{}", std::process::id());
    /// let err = Client::connect_timeout(name.as_str(), None, Duration::from_secs(1)).unwrap_err();
    /// assert!(matches!(err, multiproc::Error::Io(_)));
    /// ```
    pub fn connect_timeout(
        addr: impl ToAddress,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection> {
        let deadline = sys::deadline_after(timeout);
        Self::connect_inner(&addr.to_address()?, authkey, deadline)
    }

    fn connect_inner(
        address: &Address,
        authkey: Option<&[u8]>,
        deadline: Option<Instant>,
    ) -> Result<Connection> {
        let fd: OwnedFd = match address {
            Address::Tcp(a) => {
                let s = match deadline {
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(Error::Timeout);
                        }
                        TcpStream::connect_timeout(a, left).map_err(|e| {
                            if e.kind() == io::ErrorKind::TimedOut {
                                Error::Timeout
                            } else {
                                Error::Io(e)
                            }
                        })?
                    }
                    None => TcpStream::connect(a)?,
                };
                s.set_nodelay(true)?;
                s.into()
            }
            _ => {
                let sa = address.unix_addr()?.expect("unix address");
                UnixStream::connect_addr(&sa)?.into()
            }
        };
        let conn = Connection::with_framing(fd, true, true, Framing::Python);
        if let Some(key) = authkey {
            auth::answer_challenge_impl(&conn, key, deadline)?;
            auth::deliver_challenge_impl(&conn, key, deadline)?;
        }
        Ok(conn)
    }
}
