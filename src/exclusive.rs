//! A wrapper that is `Sync` because it never hands out shared access.
#![allow(unsafe_code)]

/// Holds a `T` that is only reachable through `&mut self` or by value, so
/// sharing `&Exclusive<T>` between threads exposes nothing of `T`.
pub(crate) struct Exclusive<T>(T);

impl<T> Exclusive<T> {
    pub(crate) fn new(value: T) -> Self {
        Exclusive(value)
    }

    pub(crate) fn into_inner(self) -> T {
        self.0
    }
}

// SAFETY: no method gives access to the inner value through `&self`, so a
// shared reference cannot be used to reach `T` from several threads; moving
// the wrapper to another thread moves `T`, which requires `T: Send`.
unsafe impl<T: Send> Sync for Exclusive<T> {}
