//! What a child runs: a function and its arguments, or a `Run` value.
#![allow(unsafe_code)]

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A function a child process can run with arguments `Args` (a tuple, like
/// Python's `args=`).
///
/// Implemented for every `fn` item and capture-free closure taking up to
/// eight arguments. The function must be zero-sized (a `fn` item or a
/// closure that captures nothing): the child, a separate process, runs its
/// own copy of the code and receives only the arguments. Capturing closures
/// are accepted by [`Process::from_closure`](crate::Process::from_closure)
/// with the fork start method only.
///
/// # When the check happens
///
/// A capturing closure or a `fn` pointer satisfies the trait bounds, so
/// `cargo check` accepts it; the size is checked when the code is
/// generated, so `cargo build` (and `cargo test`, `cargo run`) fails with:
///
/// ```text
/// error[E0080]: evaluation panicked: a process target must be a fn item or a
///               closure that captures nothing; pass what it needs in its arguments
/// ```
///
/// # Examples
/// ```
/// fn add(a: i32, b: i32) -> i32 { a + b }
/// let mut p = multiproc::Process::new(add, (2, 3));
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.take_result()?, 5);
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// A closure that captures a variable does not build; pass the value as an
/// argument instead:
/// ```compile_fail,E0080
/// let offset = 10;
/// let p = multiproc::Process::new(move |x: i32| x + offset, (1,));
/// ```
///
/// Nor does a `fn` pointer, whose value (the address) is only known at run
/// time; pass the `fn` item itself:
/// ```compile_fail,E0080
/// fn double(x: i32) -> i32 { x * 2 }
/// let f: fn(i32) -> i32 = double;
/// let p = multiproc::Process::new(f, (1,));
/// ```
pub trait Target<Args>: Copy + Send + Sync + 'static {
    /// What the function returns.
    type Output;
    /// Calls the function.
    fn call(self, args: Args) -> Self::Output;
}

/// Fails the build, with advice, when `F` is not zero-sized (a capturing
/// closure or a `fn` pointer). Evaluated when the code is generated, so it
/// shows in `cargo build`, not in `cargo check`.
#[inline(always)]
pub(crate) const fn assert_zero_sized<F>() {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "a process target must be a fn item or a closure that captures nothing; \
             pass what it needs in its arguments"
        )
    }
}

/// The value of a zero-sized target type, in the process that runs it.
pub(crate) fn zst_target<F: Copy + 'static>() -> F {
    assert_zero_sized::<F>();
    // SAFETY: `F` is zero-sized (asserted at compile time) and, for every
    // caller, a `Target`: a fn item or a closure without captures, which has
    // no bytes and no invariant, so the zero-sized value is the function.
    unsafe { std::mem::zeroed() }
}

macro_rules! impl_target {
    ($($a:ident),*) => {
        impl<Func, Ret, $($a),*> Target<($($a,)*)> for Func
        where
            Func: Fn($($a),*) -> Ret + Copy + Send + Sync + 'static,
        {
            type Output = Ret;
            #[allow(non_snake_case)]
            fn call(self, args: ($($a,)*)) -> Ret {
                let ($($a,)*) = args;
                self($($a),*)
            }
        }
    };
}

impl_target!();
impl_target!(A1);
impl_target!(A1, A2);
impl_target!(A1, A2, A3);
impl_target!(A1, A2, A3, A4);
impl_target!(A1, A2, A3, A4, A5);
impl_target!(A1, A2, A3, A4, A5, A6);
impl_target!(A1, A2, A3, A4, A5, A6, A7);
impl_target!(A1, A2, A3, A4, A5, A6, A7, A8);

/// A value that is a process body, like a subclass of Python's `Process`
/// overriding `run()`. The value itself is sent to the child, which calls
/// [`run`](Run::run).
///
/// # Examples
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Greeter { who: String }
///
/// impl multiproc::Run for Greeter {
///     type Output = String;
///     fn run(self) -> String { format!("hello, {}", self.who) }
/// }
///
/// let mut p = multiproc::Process::from_run(Greeter { who: "world".into() });
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.take_result()?, "hello, world");
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait Run: Serialize + DeserializeOwned + Send + 'static {
    /// What `run` returns; delivered to the parent.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The body of the process.
    fn run(self) -> Self::Output;
}
