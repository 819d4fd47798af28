//! `blockwire-mdtest` as a user runs it, small: its own two-data-node cluster over tcp, the
//! library and the mount beside tmpfs and the pass-through mount, every phase printed with
//! its percentiles and the ratios after.

use std::process::Command;

#[test]
fn mdtest_runs_every_phase_on_every_target() {
    let out = Command::new(env!("CARGO_BIN_EXE_blockwire-mdtest"))
        .args([
            "--transport",
            "tcp",
            "--threads",
            "1,2",
            "--items",
            "20",
            "--bytes",
            "100",
            "--mount",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    for target in [
        "library over tcp, 2 threads",
        "mount over tcp, 1 thread",
        "tmpfs, 2 threads",
        "passthrough FUSE over tmpfs, 1 thread",
    ] {
        assert!(said.contains(target), "no table for {target}: {said}");
    }
    for phase in mdserver::mdtest::PHASES {
        let rows = said.lines().filter(|l| l.trim_start().starts_with(phase)).count();
        // Eight tables (four targets, two thread counts) and the ratio lines.
        assert!(rows >= 8, "phase {phase:?} in {rows} rows: {said}");
    }
    // Two threads, 20 items each: 40 file creates in the library's table.
    let creates = said
        .lines()
        .skip_while(|l| !l.starts_with("library over tcp, 2 threads"))
        .find(|l| l.trim_start().starts_with("file create"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(creates, Some(40), "{said}");
    assert!(said.contains("mount over tcp to passthrough FUSE"), "{said}");

    let bad = Command::new(env!("CARGO_BIN_EXE_blockwire-mdtest"))
        .args(["--transport", "carrier-pigeon"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("carrier-pigeon"));
}
