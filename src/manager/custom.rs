//! Custom registered types (Python's `BaseManager.register(typeid,
//! callable, exposed=...)`): [`managed_type!`](crate::managed_type) turns a
//! Rust type into a served [`Object`](super::Object) and writes its typed
//! proxy; [`Registry`] tells a [`Manager`](super::Manager) process which
//! types to serve.

use super::server::Server;
use super::wire::Fail;

/// The type ids a manager process serves beyond Python's `SyncManager`
/// ones; given to [`Manager::start_with_types`](super::Manager::start_with_types).
///
/// It runs in the manager process (a child that never runs `main`), so it
/// is a type, not a value: its `register` builds the table there.
///
/// # Examples
/// See [`managed_type!`](crate::managed_type).
pub trait Registry: 'static {
    /// Registers the types on the manager's server.
    fn register(server: &mut Server);
}

/// No extra types: the plain `SyncManager`.
impl Registry for () {
    fn register(_: &mut Server) {}
}

/// What a method of a managed type returns: its value, or the error the
/// caller receives. Used by [`managed_type!`](crate::managed_type).
#[doc(hidden)]
pub fn outcome<T, E: Into<Fail>>(r: std::result::Result<T, E>) -> std::result::Result<T, Fail> {
    r.map_err(Into::into)
}

impl From<String> for Fail {
    /// A Python `Exception(message)`; the Rust caller gets
    /// [`Error::Remote`](crate::Error::Remote) with kind `"Exception"`.
    fn from(message: String) -> Fail {
        Fail::builtin("Exception", message)
    }
}

impl From<&str> for Fail {
    /// As for `From<String>`.
    fn from(message: &str) -> Fail {
        Fail::builtin("Exception", message)
    }
}

/// Serves a Rust type from a manager and writes its typed proxy (Python's
/// `BaseManager.register('Counter', Counter, exposed=('add', 'get'))` and
/// its `AutoProxy`).
///
/// The listed methods — and only those — are exposed. Each must exist on
/// the type as `fn name(&self, args...) -> Result<T, E>` with arguments and
/// `T` that travel as plain values (serde) and `E: Into<Fail>` (a `String`,
/// `&str` or a [`Fail`]). The proxy gets a method of the same name returning
/// `multiproc::Result<T>`. An error — or a panic — in a method reaches the
/// caller as [`Error::Remote`](crate::Error::Remote); the server goes on.
/// The type is shared by every connection at once (`&self`), so it keeps
/// its state behind locks.
///
/// # Examples
/// ```
/// use multiproc::manager::{self, Fail, Registry, Server};
/// use multiproc::{Manager, Process};
/// use std::sync::{Arc, Mutex};
///
/// #[derive(Default)]
/// pub struct Counter(Mutex<i64>);
///
/// impl Counter {
///     fn add(&self, by: i64) -> Result<i64, String> {
///         let mut n = self.0.lock().unwrap();
///         if by < 0 {
///             return Err(format!("cannot add {by}"));
///         }
///         *n += by;
///         Ok(*n)
///     }
///     fn get(&self) -> Result<i64, Fail> {
///         Ok(*self.0.lock().unwrap())
///     }
/// }
///
/// multiproc::managed_type! {
///     /// A proxy for a [`Counter`] in a manager.
///     pub CounterProxy for Counter as "Counter" {
///         fn add(by: i64) -> i64;
///         fn get() -> i64;
///     }
/// }
///
/// struct MyTypes;
/// impl Registry for MyTypes {
///     fn register(server: &mut Server) {
///         server.register("Counter", |_| Ok(Arc::new(Counter::default())));
///     }
/// }
///
/// fn bump(c: CounterProxy) -> i64 {
///     c.add(5).unwrap()
/// }
///
/// let m = Manager::start_with_types::<MyTypes>()?;
/// let c: CounterProxy = m.new_proxy(vec![])?;
/// let mut p = Process::new(bump, (c.clone(),));
/// p.start()?;
/// p.join()?;
/// assert_eq!(c.get()?, 5);
/// assert!(c.add(-1).is_err());
/// assert_eq!(c.add(1)?, 6);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[macro_export]
macro_rules! managed_type {
    (
        $(#[$pm:meta])*
        $vis:vis $proxy:ident for $ty:ty as $typeid:literal {
            $( $(#[$mm:meta])* fn $method:ident ( $($arg:ident : $argty:ty),* $(,)? ) -> $ret:ty ; )*
        }
    ) => {
        impl $crate::manager::Object for $ty {
            fn exposed(&self) -> &[&'static str] {
                &[$(stringify!($method)),*]
            }

            fn call(
                &self,
                method: &str,
                args: $crate::manager::Args,
                _call: &$crate::manager::Call<'_>,
            ) -> ::std::result::Result<$crate::pickle::Value, $crate::manager::Fail> {
                #[allow(unused_mut, unused_variables)]
                let mut it = args.args.into_iter();
                match method {
                    $(
                        stringify!($method) => {
                            $(
                                let $arg: $argty = $crate::manager::from_value(
                                    it.next().ok_or_else(|| {
                                        $crate::manager::Fail::type_error(concat!(
                                            "missing argument ",
                                            stringify!($arg)
                                        ))
                                    })?,
                                )?;
                            )*
                            let out: $ret = $crate::manager::outcome(<$ty>::$method(self, $($arg),*))?;
                            Ok($crate::manager::to_value(&out)?)
                        }
                    )*
                    other => Err($crate::manager::Fail::Traceback(format!(
                        "{} has no exposed method {other:?}",
                        $typeid
                    ))),
                }
            }
        }

        $(#[$pm])*
        $vis struct $proxy {
            base: $crate::manager::BaseProxy,
        }

        impl $crate::manager::Proxy for $proxy {
            const TYPEID: &'static str = $typeid;
            fn from_base(base: $crate::manager::BaseProxy) -> Self {
                $proxy { base }
            }
            fn base(&self) -> &$crate::manager::BaseProxy {
                &self.base
            }
        }

        impl ::std::clone::Clone for $proxy {
            fn clone(&self) -> Self {
                $proxy { base: self.base.clone() }
            }
        }

        impl ::std::fmt::Debug for $proxy {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.base.fmt(f)
            }
        }

        impl $crate::manager::__serde::Serialize for $proxy {
            fn serialize<S: $crate::manager::__serde::Serializer>(
                &self,
                s: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                self.base.serialize(s)
            }
        }

        impl<'de> $crate::manager::__serde::Deserialize<'de> for $proxy {
            fn deserialize<D: $crate::manager::__serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                <$crate::manager::BaseProxy as $crate::manager::__serde::Deserialize>::deserialize(d)
                    .map(|base| $proxy { base })
            }
        }

        #[allow(dead_code)]
        impl $proxy {
            $(
                $(#[$mm])*
                #[doc = concat!("Calls `", stringify!($method), "` in the manager.")]
                ///
                /// # Errors
                /// The method's error or panic (`Error::Remote`), or the
                /// errors of any manager call.
                pub fn $method(&self, $($arg: $argty),*) -> $crate::Result<$ret> {
                    self.base.call(
                        stringify!($method),
                        vec![$($crate::manager::to_value(&$arg)?),*],
                    )
                }
            )*
        }
    };
}
