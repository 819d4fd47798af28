//! One test per validation rule: each breaks one value of a valid file and checks that the
//! error names that key (and the message says it).

use std::path::Path;

use super::*;

const BASE: &str = r#"
cluster_id = 7

[[nodes]]
id = 1
kind = "data"
host = "127.0.0.1"
port = 11860

[[nodes]]
id = 2
kind = "data"
host = "127.0.0.1"
port = 11861

[[nodes]]
id = 3
kind = "api"
host = "10.0.0.9"
port = 11862

[[links]]
nodes = [1, 2]
transport = "shm"
ring_bytes = 1048576
spin_time_us = 20
secret = "0123456789abcdef"

[[links]]
nodes = [1, 3]
transport = "tcp"
secret = "0123456789abcdef"

[threads]
count = 2
receive = 1
spin_time_us = 50
b_signals_per_round = 64

[[blocks]]
kind = "ping"
thread = 1

[[blocks]]
kind = "stats"
thread = 0

[limits]
send_buffer_bytes = 4194304
job_buffer_pages = 8
job_buffer_page_words = 8192
max_section_words = 2048
max_signal_words = 8192
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

/// Replaces the first `from` in the base file with `to`, and expects an error naming `key`.
fn refuses(from: &str, to: &str, key: &str) {
    assert!(BASE.contains(from), "test bug: {from:?} not in the base file");
    refuses_file(&BASE.replacen(from, to, 1), key, "allowed");
}

/// Expects `text` refused with an error naming `key` and saying `says` (and what is allowed).
fn refuses_file(text: &str, key: &str, says: &str) {
    let err = parse(text).expect_err("the changed file must be refused");
    assert_eq!(err.key(), Some(key), "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("`{key}`")), "message does not name the key: {message}");
    assert!(message.contains("allowed"), "message does not say what is allowed: {message}");
    assert!(message.contains(says), "message does not say {says:?}: {message}");
}

#[test]
fn base_file_is_valid() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.cluster_id, 7);
    assert_eq!(c.nodes.len(), 3);
    assert_eq!(c.links[0].transport, Transport::Shm);
    assert_eq!(c.threads.count, 2);
    assert_eq!(c.blocks[0].number, crate::blocks::PING);
    assert_eq!(c.tuning().limits.max_signal_words(), 8192);
    assert_eq!(c.data_node(2).unwrap().port, 11861);
}

#[test]
fn cluster_id_zero() {
    refuses("cluster_id = 7", "cluster_id = 0", "cluster_id");
}

#[test]
fn no_nodes() {
    let text = "cluster_id = 1\nnodes = []\n";
    let err = parse(text).unwrap_err();
    assert_eq!(err.key(), Some("nodes"), "{err}");
}

#[test]
fn node_id_out_of_range() {
    refuses("id = 2\n", "id = 256\n", "nodes[1].id");
}

#[test]
fn node_id_duplicate() {
    refuses("id = 2\n", "id = 1\n", "nodes[1].id");
}

#[test]
fn node_kind_unknown() {
    refuses("kind = \"api\"", "kind = \"client\"", "nodes[2].kind");
}

#[test]
fn node_host_empty() {
    refuses("host = \"10.0.0.9\"", "host = \"\"", "nodes[2].host");
}

#[test]
fn node_port_out_of_range() {
    refuses("port = 11862", "port = 70000", "nodes[2].port");
}

#[test]
fn node_host_port_duplicate() {
    refuses("port = 11861", "port = 11860", "nodes[1].port");
}

#[test]
fn link_nodes_unknown_or_same() {
    refuses("nodes = [1, 3]", "nodes = [1, 9]", "links[1].nodes");
    refuses("nodes = [1, 3]", "nodes = [3, 3]", "links[1].nodes");
}

#[test]
fn link_duplicate_pair() {
    refuses("nodes = [1, 3]", "nodes = [2, 1]", "links[1].nodes");
}

#[test]
fn link_transport_unknown() {
    refuses("transport = \"tcp\"", "transport = \"udp\"", "links[1].transport");
}

#[test]
fn link_shm_needs_one_host() {
    refuses("transport = \"tcp\"", "transport = \"shm\"", "links[1].transport");
}

#[test]
fn link_ring_bytes_not_power_of_two() {
    refuses("ring_bytes = 1048576", "ring_bytes = 1000000", "links[0].ring_bytes");
}

#[test]
fn link_spin_time_too_long() {
    refuses("spin_time_us = 20", "spin_time_us = 2000000", "links[0].spin_time_us");
}

#[test]
fn link_between_two_api_nodes() {
    let text = BASE.replacen("id = 2\nkind = \"data\"", "id = 2\nkind = \"api\"", 1);
    let text = text.replacen("nodes = [1, 3]", "nodes = [2, 3]", 1);
    refuses_file(&text, "links[1].nodes", "at least one data node");
}

#[test]
fn link_secret_on_some_links_of_a_node_only() {
    refuses(
        "transport = \"tcp\"\nsecret = \"0123456789abcdef\"",
        "transport = \"tcp\"",
        "links[1].secret",
    );
}

#[test]
fn link_secrets_differ_on_one_node() {
    refuses(
        "transport = \"tcp\"\nsecret = \"0123456789abcdef\"",
        "transport = \"tcp\"\nsecret = \"fedcba9876543210\"",
        "links[1].secret",
    );
}

#[test]
fn shm_ring_smaller_than_two_largest_signals() {
    // 4096 bytes is a valid ring size in itself, but not for 8192-word signals.
    refuses("ring_bytes = 1048576", "ring_bytes = 4096", "links[0].ring_bytes");
}

#[test]
fn send_buffer_smaller_than_two_pages() {
    // 64 KiB is in range in itself, but a page is 64 KiB, and a link needs more than one.
    refuses("send_buffer_bytes = 4194304", "send_buffer_bytes = 65536", "limits.send_buffer_bytes");
}

#[test]
fn send_buffer_without_a_page_for_every_block_thread() {
    // Two block threads and 64 KiB pages: 4 pages at least; 3 pages pass the two-page minimum.
    let text = BASE.replacen("send_buffer_bytes = 4194304", "send_buffer_bytes = 196608", 1);
    refuses_file(&text, "limits.send_buffer_bytes", "for each of the 2 block threads");
    let four = BASE.replacen("send_buffer_bytes = 4194304", "send_buffer_bytes = 262144", 1);
    parse(&four).unwrap();
}

#[test]
fn buffers_larger_than_the_machine() {
    // 4096 pages of 2^20 words: 16 GiB for each of the twelve job buffers.
    let text = BASE.replacen("job_buffer_pages = 8", "job_buffer_pages = 4096", 1).replacen(
        "job_buffer_page_words = 8192",
        "job_buffer_page_words = 1048576",
        1,
    );
    refuses_file(&text, "limits.job_buffer_pages", "12 job buffers of 17179869184 bytes");
}

#[test]
fn link_secret_too_short() {
    refuses("secret = \"0123456789abcdef\"", "secret = \"short\"", "links[0].secret");
}

#[test]
fn threads_count_out_of_range() {
    refuses("count = 2", "count = 0", "threads.count");
}

#[test]
fn threads_cpus_wrong_length() {
    refuses("count = 2\n", "count = 2\ncpus = [0]\n", "threads.cpus");
}

#[test]
fn threads_cpu_not_on_this_machine() {
    refuses("count = 2\n", "count = 2\ncpus = [0, 100000]\n", "threads.cpus[1]");
}

#[test]
fn threads_receive_too_many() {
    refuses("receive = 1", "receive = 2", "threads.receive");
}

#[test]
fn threads_send_too_many() {
    refuses("receive = 1", "receive = 1\nsend = 2", "threads.send");
}

#[test]
fn threads_spin_time_too_long() {
    refuses("spin_time_us = 50", "spin_time_us = 5000000", "threads.spin_time_us");
}

#[test]
fn threads_b_quota_zero() {
    refuses("b_signals_per_round = 64", "b_signals_per_round = 0", "threads.b_signals_per_round");
}

#[test]
fn threads_timers_zero() {
    refuses(
        "b_signals_per_round = 64",
        "b_signals_per_round = 64\ntimers_per_thread = 0",
        "threads.timers_per_thread",
    );
}

#[test]
fn block_kind_unknown() {
    refuses("kind = \"stats\"", "kind = \"storage\"", "blocks[1].kind");
}

#[test]
fn block_instance_out_of_range() {
    refuses("kind = \"stats\"\n", "kind = \"stats\"\ninstance = 256\n", "blocks[1].instance");
}

#[test]
fn block_thread_out_of_range() {
    refuses("thread = 1", "thread = 2", "blocks[0].thread");
}

#[test]
fn block_placed_twice() {
    refuses("kind = \"stats\"", "kind = \"ping\"", "blocks[1].instance");
}

#[test]
fn send_buffer_too_small() {
    refuses("send_buffer_bytes = 4194304", "send_buffer_bytes = 100", "limits.send_buffer_bytes");
}

#[test]
fn job_buffer_pages_too_few() {
    refuses("job_buffer_pages = 8", "job_buffer_pages = 1", "limits.job_buffer_pages");
}

#[test]
fn max_signal_words_out_of_range() {
    refuses("max_signal_words = 8192", "max_signal_words = 70000", "limits.max_signal_words");
}

#[test]
fn max_section_words_too_large_for_signal() {
    refuses("max_section_words = 2048", "max_section_words = 9000", "limits.max_section_words");
}

#[test]
fn job_buffer_page_smaller_than_a_signal() {
    refuses(
        "job_buffer_page_words = 8192",
        "job_buffer_page_words = 4096",
        "limits.job_buffer_page_words",
    );
}

#[test]
fn node_id_argument_must_be_a_data_node() {
    let c = parse(BASE).unwrap();
    for id in [3, 4, 0, 1000] {
        let err = c.data_node(id).unwrap_err();
        assert_eq!(err.key(), Some("--node-id"), "{err}");
        assert!(err.to_string().contains("1, 2"), "{err}");
    }
}

#[test]
fn unknown_key_is_named() {
    let text = BASE.replacen("[threads]\n", "[threads]\nspin_time = 5\n", 1);
    let err = parse(&text).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("spin_time"), "{err}");
}

#[test]
fn shipped_examples_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // The engine's examples place engine blocks: the engine crate loads those.
        let engine = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("engine-"));
        if path.extension().is_some_and(|e| e == "toml") && !engine {
            let c = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(c.nodes.iter().any(|n| n.kind == NodeKind::Data), "{}", path.display());
            loaded += 1;
        }
    }
    assert!(loaded >= 3, "expected at least three example files, found {loaded}");
}

#[test]
fn nodes_rdma_device_must_be_a_device_name() {
    refuses("id = 1\n", "id = 1\nrdma_device = \"bad name\"\n", "nodes[0].rdma_device");
}

/// `buffers_fit` of `config` on a machine of `memory` bytes.
fn fits(memory: u128, config: &Config) -> Result<(), ConfigError> {
    validate::buffers_fit(memory, &config.nodes, &config.links, &config.threads, &config.limits)
}

#[test]
fn buffers_count_the_receive_thread_that_receive_0_still_starts() {
    // Node 1: lanes of 256 KiB, 4 MiB send buffers on two links, and the 1 MiB shm ring's 3 MiB
    // and a page. With one receive thread (what runs with `receive = 0`): 12 lanes, 3 MiB, and
    // 14 MiB and a page in all, over half of 27 MiB; counting no receive thread, 8 lanes would
    // have fitted.
    let config = parse(&BASE.replacen("receive = 1", "receive = 0", 1)).unwrap();
    let mib = 1u128 << 20;
    let err = fits(27 * mib, &config).expect_err("a receive thread's lanes were not counted");
    assert_eq!(err.key(), Some("limits.send_buffer_bytes"), "{err}");
    let message = err.to_string();
    assert!(message.contains("12 job buffers of 262144 bytes"), "{message}");
    assert!(message.contains("1 receive thread"), "{message}");
    fits(29 * mib, &config).unwrap();
}

#[test]
fn link_rings_count_against_memory() {
    // A 1 GiB shared-memory ring: a 2 GiB segment and a 1 GiB copy buffer, past half of 4 GiB.
    let mut config = parse(BASE).unwrap();
    config.links[0].ring_bytes = 1 << 30;
    let err = fits(4 << 30, &config).expect_err("the link's rings were not counted");
    assert_eq!(err.key(), Some("links[0].ring_bytes"), "{err}");
    assert!(err.to_string().contains("bytes of link rings"), "{err}");
    // The same ring over TCP takes no ring memory.
    config.links[0].transport = Transport::Tcp;
    fits(4 << 30, &config).unwrap();
}
