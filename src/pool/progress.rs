//! Progress bars for the map family (feature `progress`), the way
//! `tqdm.contrib.concurrent.process_map` shows them.

use super::{IMap, Pool};
use crate::error::Result;
use crate::process::Target;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An [`IMap`] that advances a progress bar by one for each result it
/// yields (an `Ok` or an `Err`; a failed chunk yields one `Err` for its
/// items), and finishes the bar where it stands at the end; made by
/// [`IMap::progress`] or [`IMap::progress_with`].
pub struct Progress<'p, R> {
    inner: IMap<'p, R>,
    bar: ProgressBar,
}

impl<R> std::fmt::Debug for Progress<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<Progress {:?} at {}>", self.inner, self.bar.position())
    }
}

impl<R> Progress<'_, R> {
    /// The bar, e.g. to set a message.
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }
}

const TEMPLATE: &str = "{bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]";

impl<'p, R: DeserializeOwned + Send + 'static> IMap<'p, R> {
    /// Shows a progress bar on standard error while the results are
    /// consumed: with the number of items when the input knows it
    /// ([`input_len`](Self::input_len)), otherwise a counter. Nothing is
    /// drawn when standard error is not a terminal.
    ///
    /// # Examples
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// // Python: process_map(square, range(100))
    /// let v: Vec<u64> = pool.imap(square, 0..100).progress().collect::<Result<_, _>>()?;
    /// assert_eq!(v[99], 9801);
    /// // The same with an executor:
    /// let ex = multiproc::Executor::new(2)?;
    /// let n = ex.map(square, 0..10).progress().count();
    /// assert_eq!(n, 10);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn progress(self) -> Progress<'p, R> {
        let bar = match self.input_len() {
            Some(n) => ProgressBar::new(n as u64).with_style(
                ProgressStyle::with_template(TEMPLATE)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::no_length(),
        };
        self.progress_with(bar)
    }

    /// Like [`progress`](Self::progress) with a bar of your own (its length,
    /// style and draw target).
    ///
    /// # Examples
    /// ```
    /// use indicatif::{ProgressBar, ProgressDrawTarget};
    /// fn inc(x: u32) -> u32 { x + 1 }
    /// let pool = multiproc::Pool::new(2)?;
    /// let bar = ProgressBar::with_draw_target(Some(5), ProgressDrawTarget::hidden());
    /// let it = pool.imap(inc, 0..5).progress_with(bar.clone());
    /// assert_eq!(it.map(Result::unwrap).sum::<u32>(), 15);
    /// assert_eq!(bar.position(), 5);
    /// assert!(bar.is_finished());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn progress_with(self, bar: ProgressBar) -> Progress<'p, R> {
        Progress { inner: self, bar }
    }
}

impl<R: DeserializeOwned + Send + 'static> Iterator for Progress<'_, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        let item = self.inner.next();
        match item {
            Some(_) => self.bar.inc(1),
            // Not `finish`, which would move the bar to its length even
            // when failed chunks yielded one error for several items.
            None => self.bar.abandon(),
        }
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl Pool {
    /// [`map`](Self::map) with a progress bar on standard error, one step
    /// per item (Python's `tqdm.contrib.concurrent.process_map`; feature
    /// `progress`). The items are cut into chunks as for `map`.
    ///
    /// # Errors
    /// As for [`map`](Self::map): the first failed item, as
    /// [`Error::Task`](crate::Error::Task) naming its index.
    ///
    /// # Examples
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.map_progress(square, 0..4)?, [0, 1, 4, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_progress<F, T, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Target<(T,), Output = R>,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items: Vec<T> = items.into_iter().collect();
        let chunksize = items.len().div_ceil(self.processes * 4).max(1);
        self.imap_chunked(f, items, chunksize).progress().collect()
    }
}
