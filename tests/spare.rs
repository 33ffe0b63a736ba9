//! The fork server's spare child: a start with the forkserver method is
//! served by a child forked ahead of time, which must become exactly the
//! process a fork on demand would have made, and must not outlive the
//! server.
//!
//! The tests share the one fork server of this binary and look at its
//! children, so they run one at a time.

use multiproc::{Process, current_process, forkserver_pid, parent_process};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The children of process `pid` (its main thread's, which is the only
/// thread of the fork server).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Waits until the server's only child is its spare, and returns that pid.
fn spare_of(server: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = children(server);
        if c.len() == 1 {
            return c[0];
        }
        assert!(
            Instant::now() < deadline,
            "the fork server has children {c:?}, expected one spare"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn started_server() -> u32 {
    fn noop() {}
    let mut p = Process::new(noop, ());
    p.start().unwrap();
    p.join().unwrap();
    forkserver_pid().expect("a fork server")
}

/// What a child knows about itself.
type Me = (u32, String, Vec<u32>, u32, Option<u32>, String, u8);

fn whoami() -> Me {
    let me = current_process();
    let parent = parent_process().expect("a parent");
    (
        std::process::id(),
        me.name().to_string(),
        me.identity().to_vec(),
        me.pid(),
        Some(parent.pid()),
        parent.name().to_string(),
        log::max_level() as u8,
    )
}

fn run_whoami() -> (u32, Me) {
    let mut p = Process::new(whoami, ());
    p.start().unwrap();
    let pid = p.pid().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    (pid, p.take_result().unwrap())
}

#[test]
fn a_start_uses_the_spare_and_the_child_is_fresh() {
    let _g = serial();
    multiproc::set_forkserver_spare(true);
    multiproc::log_to_stderr(log::LevelFilter::Warn).unwrap();
    let server = started_server();
    let parent_name = current_process().name().to_string();
    let parent_identity = current_process().identity().to_vec();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let spare = spare_of(server);
        let (pid, me) = run_whoami();
        assert_eq!(pid, spare, "the child is the spare the server held");
        let (os_pid, name, identity, info_pid, ppid, pname, level) = me;
        assert_eq!(os_pid, pid);
        assert_eq!(info_pid, pid, "current_process().pid() in the child");
        assert!(name.starts_with("Process-"), "name {name}");
        assert_eq!(identity.len(), parent_identity.len() + 1);
        assert_eq!(ppid, Some(std::process::id()));
        assert_eq!(pname, parent_name);
        assert_eq!(
            level,
            log::LevelFilter::Warn as u8,
            "the parent's logging level"
        );
        seen.push((pid, name, identity));
    }
    assert_ne!(seen[0].0, seen[1].0);
    assert_ne!(seen[0].1, seen[1].1);
    assert_ne!(seen[0].2, seen[1].2);
    // The parent is unchanged.
    assert_eq!(current_process().name(), parent_name);
    assert_eq!(current_process().pid(), std::process::id());
    assert_eq!(current_process().identity(), &parent_identity[..]);
}

fn sleep_long() {
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_child_from_the_spare_outlives_the_server_like_any_child() {
    // An idle spare ends with the server (end of stream on its socket);
    // once it is a child it must not.
    let _g = serial();
    multiproc::set_forkserver_spare(true);
    let server = started_server();
    let spare = spare_of(server);
    let mut p = Process::new(sleep_long, ());
    p.start().unwrap();
    assert_eq!(p.pid(), Some(spare));
    let new_spare = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let c: Vec<u32> = children(server)
                .into_iter()
                .filter(|&c| c != spare)
                .collect();
            if c.len() == 1 {
                break c[0];
            }
            assert!(Instant::now() < deadline, "no new spare: {c:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    kill_server_and_check(server, new_spare);
    std::thread::sleep(Duration::from_millis(200));
    // Ask the kernel: with the server gone, the handle cannot know.
    let pid = p.pid().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    assert!(
        matches!(state, Some("S" | "R")),
        "the child died with the fork server: {stat}"
    );
    // SAFETY: kill takes plain integers; `pid` is not reaped yet (it is
    // reparented to this process), so the number is not recycled.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    // Its kernel parent is gone: this process (the subreaper) reaps it.
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; `pid` was reparented to us.
    let r = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    assert_eq!(r, pid as i32);
    let _ = p.join_timeout(Duration::from_secs(5));
}

/// SIGKILLs the server and checks that `spare` ends too.
fn kill_server_and_check(server: u32, spare: u32) {
    // The spare is reparented to this process (a subreaper), so it can be
    // reaped and its end observed here.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0);
    // SAFETY: kill takes plain integers; `server` is our child (the fork
    // server), not yet reaped, so the pid is not recycled.
    assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(spare as i32, &mut status, libc::WNOHANG) };
        if r == spare as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spare {spare} outlived the fork server (waitpid {r})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its socket's end of stream (the kernel closes the server's
    // descriptors when it dies): it exits quietly.
    let ended = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(ended, "the spare ended with status {status:#x}");
}

#[test]
fn killing_the_server_ends_its_spare_and_the_next_start_works() {
    let _g = serial();
    multiproc::set_forkserver_spare(true);
    let server = started_server();
    let spare = spare_of(server);
    kill_server_and_check(server, spare);
    // The next start notices the dead server and starts another.
    let (pid, me) = run_whoami();
    assert_eq!(me.0, pid);
    let new_server = forkserver_pid().unwrap();
    assert_ne!(new_server, server);
}

#[test]
fn without_the_spare_the_server_holds_no_child() {
    let _g = serial();
    multiproc::set_forkserver_spare(true);
    let server = started_server();
    spare_of(server);
    multiproc::set_forkserver_spare(false);
    assert!(!multiproc::forkserver_spare());
    let server = started_server();
    // The request that did not want a spare retired it; none comes back.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(children(server), Vec::<u32>::new());
    let (pid, me) = run_whoami();
    assert_eq!(me.0, pid);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(children(server), Vec::<u32>::new());
    multiproc::set_forkserver_spare(true);
}

#[test]
fn the_spare_holds_no_descriptor_of_the_server() {
    let _g = serial();
    multiproc::set_forkserver_spare(true);
    let server = started_server();
    let spare = spare_of(server);
    // Its own socket to the server (on 4, so that the child's standard
    // streams and channel arrive on 0..=3), nothing else.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fds: Vec<u32> = std::fs::read_dir(format!("/proc/{spare}/fd"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        let mut fds = fds;
        fds.sort();
        if fds == [4] {
            break;
        }
        assert!(Instant::now() < deadline, "the spare holds {fds:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_word(conn: multiproc::Connection) -> u32 {
    conn.recv::<u32>().unwrap_or(0)
}

#[test]
fn join_waits_for_a_child_that_outlives_its_server() {
    // A fork server child's status comes from the server; with the server
    // gone, join must wait for the child itself, not report an end at the
    // server's end of stream.
    let _g = serial();
    multiproc::set_forkserver_spare(true);
    let server = started_server();
    let (here, there) = multiproc::Pipe::new().unwrap();
    let mut p = Process::new(wait_for_word, (there,));
    p.start().unwrap();
    let pid = p.pid().unwrap();
    // SAFETY: kill takes plain integers; `server` is our child, not yet
    // reaped, so the pid is not recycled.
    assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{server}/stat"))
        .unwrap_or_default()
        .contains(") Z")
    {
        assert!(Instant::now() < deadline, "the fork server did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The child blocks on the pipe: joining must time out.
    assert!(!p.join_timeout(Duration::from_millis(300)).unwrap());
    assert!(p.is_alive());
    here.send(&7u32).unwrap();
    assert!(p.join_timeout(Duration::from_secs(30)).unwrap());
    assert_eq!(p.take_result().unwrap(), 7);
    // Reparented to this process if an earlier test made it a subreaper.
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; WNOHANG never blocks, and the
    // pid is only reaped here if it is our child.
    unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
}

fn bind_now_seen() -> Option<String> {
    std::env::var("LD_BIND_NOW").ok()
}

#[test]
fn the_servers_own_loader_setting_does_not_reach_its_children() {
    // The fork server is started with symbols bound at load and removes
    // that setting at once: a child sees the environment of the program.
    if std::env::var_os("LD_BIND_NOW").is_some() {
        return; // The program's own setting is inherited, as it should be.
    }
    let _serial = serial();
    for _ in 0..2 {
        let mut p = Process::new(bind_now_seen, ());
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(p.take_result().unwrap(), None);
    }
}

/// The close-on-exec flags of descriptors 0..=3 in this process.
fn cloexec_of_first_four() -> Vec<bool> {
    (0..4)
        .map(|fd| {
            // SAFETY: F_GETFD only reads the flags of a descriptor number.
            #[allow(unsafe_code)]
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert!(flags >= 0, "descriptor {fd} is not open");
            flags & libc::FD_CLOEXEC != 0
        })
        .collect()
}

#[test]
fn a_child_from_the_spare_keeps_its_standard_streams_across_exec() {
    // The standard streams (and the channel, as in a child forked on
    // demand) are inheritable, so a program the child runs writes where
    // the parent does.
    let _serial = serial();
    multiproc::set_forkserver_spare(true);
    let server = started_server();
    let spare = spare_of(server);
    let mut p = Process::new(cloexec_of_first_four, ());
    p.start().unwrap();
    assert_eq!(p.pid(), Some(spare));
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(p.take_result().unwrap(), vec![false; 4]);
}
