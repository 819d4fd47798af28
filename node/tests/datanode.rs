//! The data-node binary as a process: starts on a shipped example, stops cleanly with exit 0
//! on SIGTERM and on SIGINT, and refuses a bad configuration with a message naming the key.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::wait_exit;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/config").join(name)
}

fn spawn(config: &std::path::Path, node_id: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_blockwire-node"))
        .args(["--config", config.to_str().unwrap(), "--node-id", node_id])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the "data node running" log line; returns the stderr reader for the rest.
fn wait_running(child: &mut Child) -> BufReader<std::process::ChildStderr> {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "the data node exited before running");
        if line.contains("data node running") {
            return stderr;
        }
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill with a child's pid and a valid signal number has no memory effects.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0);
}

#[test]
fn starts_and_stops_on_sigterm_with_exit_0() {
    let mut child = spawn(&example("two-node-tcp.toml"), "2");
    let mut rest = wait_running(&mut child);
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(0), "{status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut rest, &mut log).unwrap();
    assert!(log.contains("data node stopped"), "{log}");
    assert!(log.contains("block thread counters"), "{log}");
}

#[test]
fn stops_on_sigint_with_exit_0() {
    let mut child = spawn(&example("one-node.toml"), "1");
    let _rest = wait_running(&mut child);
    signal(&child, libc::SIGINT);
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

#[test]
fn bad_config_exits_non_zero_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("blockwire-datanode-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let text = std::fs::read_to_string(example("one-node.toml"))
        .unwrap()
        .replace("count = 1", "count = 0");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_blockwire-node"))
        .args(["--config", path.to_str().unwrap(), "--node-id", "1"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`threads.count` = 0"), "{stderr}");
}

#[test]
fn unknown_node_id_exits_non_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_blockwire-node"))
        .args(["--config", example("one-node.toml").to_str().unwrap(), "--node-id", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--node-id` = 5"));
}

#[test]
fn a_node_without_links_still_owns_its_address() {
    // One data node, no links, on a port of its own: a second copy of it must not start.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("blockwire-one-node-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("one.toml");
    let text = std::fs::read_to_string(example("one-node.toml"))
        .unwrap()
        .replace("port = 11860", &format!("port = {port}"));
    std::fs::write(&path, text).unwrap();
    let mut first = spawn(&path, "1");
    let _rest = wait_running(&mut first);
    let second = Command::new(env!("CARGO_BIN_EXE_blockwire-node"))
        .args(["--config", path.to_str().unwrap(), "--node-id", "1"])
        .output()
        .unwrap();
    signal(&first, libc::SIGTERM);
    assert_eq!(wait_exit(&mut first).code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
}
