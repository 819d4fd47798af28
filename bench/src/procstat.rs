//! CPU time of other processes and of single threads, from `/proc` (Linux), and pinning a child
//! process before it runs. Used to report both ends' CPU use of a full-stack run.
//!
//! Reading `/proc` is best effort: a process or thread that is gone, or a file that does not
//! parse, reads as zero time (the figure is a report, not a control input).

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// Clock ticks per second of `/proc` times.
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a configuration value; no memory is passed.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime + stime of a `/proc/.../stat` line (fields 14 and 15, counted after the `comm` field,
/// which may itself hold spaces and parentheses).
fn stat_cpu(text: &str) -> Duration {
    let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // After ")": state is field 3 of the line, so utime (14) and stime (15) are at 11 and 12.
    let ticks = field(11) + field(12);
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000 / ticks_per_second()))
}

/// CPU time (user + system) process `pid` has used.
pub fn process_cpu(pid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(Duration::ZERO, |t| stat_cpu(&t))
}

/// CPU time thread `tid` of this process has used.
pub fn thread_cpu(tid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .map_or(Duration::ZERO, |t| stat_cpu(&t))
}

/// The id of this process's thread named `name`, if there is one.
pub fn own_thread(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc/self/task").ok()?.filter_map(|e| e.ok()).find_map(|e| {
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim_end() == name).then(|| e.file_name().to_str()?.parse().ok())?
    })
}

/// Makes `command`'s process (and every thread it starts) run on `cpu` only.
pub fn pin_child(command: &mut Command, cpu: usize) {
    // SAFETY: the closure runs in the forked child before exec; it only builds a CPU set on its
    // stack and makes one system call (sched_setaffinity is async-signal-safe), allocating nothing.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            // A CPU that does not exist leaves the child unpinned rather than failing the run.
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        let hz = ticks_per_second();
        assert_eq!(stat_cpu(line), Duration::from_nanos(300 * (1_000_000_000 / hz)));
        assert_eq!(stat_cpu("garbage"), Duration::ZERO);
        assert_eq!(stat_cpu("1 (x) S"), Duration::ZERO);
    }

    #[test]
    fn own_process_and_thread_are_found() {
        // Work until the kernel has accounted some CPU time to this process (bounded).
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        while process_cpu(std::process::id()).is_zero() && std::time::Instant::now() < until {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        assert!(process_cpu(std::process::id()) > Duration::ZERO);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let probe = std::thread::Builder::new()
            .name("bw-probe".into())
            .spawn(move || {
                let _ = ready_tx.send(());
                rx.recv()
            })
            .unwrap();
        ready_rx.recv().unwrap();
        let tid = own_thread("bw-probe");
        drop(tx);
        let _ = probe.join();
        assert!(tid.is_some(), "a named thread is listed in /proc/self/task");
        assert!(own_thread("no-such-thread-name").is_none());
    }
}
