#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]

mod codec;
mod connection;
mod error;
mod process;
mod shm;
mod sync;
mod sys;

pub use codec::{Handle, handle};
pub use connection::{Connection, DEFAULT_MAX_MESSAGE, Pipe};
pub use error::{Error, RemotePanic, Result, signal_name};
pub use process::{
    ActiveChild, Context, ParentProcess, Process, ProcessInfo, Run, StartMethod, Target,
    active_children, cpu_count, current_process, exit, get_all_start_methods, get_context,
    get_start_method, parent_process, set_start_method,
};
pub use shm::{Array, ArrayGuard, RawArray, RawValue, SharedMemory, ShmSafe, Value, ValueGuard};
pub use sync::{
    Barrier, BoundedSemaphore, BrokenBarrierError, Condition, ConditionGuard, Event, Lock,
    LockError, LockGuard, LockResult, RLock, RLockGuard, Semaphore,
};
