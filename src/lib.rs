#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod codec;
pub mod connection;
mod error;
mod exclusive;
pub mod pickle;
mod process;
mod sys;

pub use codec::{Handle, handle};
pub use connection::{
    Address, Client, Connection, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_MESSAGE, Listener, Pipe,
    ToAddress, Waitable,
};
pub use error::{Error, RemotePanic, Result, signal_name};
pub use process::forkserver::server_pid as forkserver_pid;
pub use process::{
    ActiveChild, Context, ParentProcess, Process, ProcessInfo, Run, StartMethod, Target,
    active_children, cpu_count, current_process, exit, get_all_start_methods, get_context,
    get_start_method, parent_process, set_start_method,
};
