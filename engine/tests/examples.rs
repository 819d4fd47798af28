//! The shipped engine cluster files load with the engine's kinds, and their layout (node
//! groups, instances, settings) is what their comments say.

use std::path::Path;

#[test]
fn the_engine_examples_load_with_their_layout() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let path = dir.join("engine-two-node.toml");
    let engine = engine::Engine::new();
    let (config, layout) = engine::load_config(&engine, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let layout = layout.expect("engine blocks are placed");
    assert_eq!(layout.node_groups.len(), 1);
    assert_eq!(layout.node_groups[0].len(), 2);
    assert_eq!(layout.storage_instances, 2);
    assert_eq!(layout.coordinator.transaction_deadlock_timeout_ms, 1200);
    assert_eq!(layout.storage.memory_bytes, 256 << 20);
    assert!(config.blocks.iter().any(|b| b.kind == "ping"));
    let table: engine::schema::TableDef =
        toml::from_str(&std::fs::read_to_string(dir.join("../tables/accounts.toml")).unwrap()).unwrap();
    assert_eq!(table.validate(&layout.dictionary.limits), Ok(8));
}

#[test]
fn engine_settings_are_checked_by_name() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config/engine-two-node.toml"))
        .unwrap();
    let engine = engine::Engine::new();
    let kinds = engine.kinds();
    let bad = text.replace("replicas = 2", "replicas = 3");
    let e = node::config::Config::parse_with(&bad, Path::new("x.toml"), &kinds).unwrap_err().to_string();
    assert!(e.contains("replicas") && e.contains("3"), "{e}");
    let bad = text.replace("transaction_deadlock_timeout_ms = 1200", "transaction_deadlock_timeout_ms = 1");
    let e = node::config::Config::parse_with(&bad, Path::new("x.toml"), &kinds).unwrap_err().to_string();
    assert!(e.contains("transaction_deadlock_timeout_ms"), "{e}");
    let bad = text.replace("memory_bytes = \"256M\"", "memory_bytes = \"lots\"");
    let e = node::config::Config::parse_with(&bad, Path::new("x.toml"), &kinds).unwrap_err().to_string();
    assert!(e.contains("memory_bytes") && e.contains("lots"), "{e}");
    let bad = text.replace("max_row_bytes = 6000", "max_row_bytes = 60000");
    let config = node::config::Config::parse_with(&bad, Path::new("x.toml"), &kinds).unwrap();
    let e = engine.configure(&config).unwrap_err().to_string();
    assert!(e.contains("max_row_bytes") && e.contains("max_section_words"), "{e}");
    let odd = text.replace(
        "[[nodes]]\nid = 100",
        "[[nodes]]\nid = 3\nkind = \"data\"\nhost = \"127.0.0.1\"\nport = 11975\n\n[[nodes]]\nid = 100",
    );
    let config = node::config::Config::parse_with(&odd, Path::new("x.toml"), &kinds).unwrap();
    let e = engine::Layout::from_config(&config).unwrap_err().to_string();
    assert!(e.contains("replicas") && e.contains("divisor"), "{e}");
}

#[test]
fn the_durable_example_loads_and_durability_settings_are_checked_by_name() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config/engine-two-node-durable.toml");
    let engine = engine::Engine::new();
    let (_, layout) = engine::load_config(&engine, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let layout = layout.expect("engine blocks are placed");
    assert!(layout.durable());
    assert_eq!(layout.checkpoint.map(|c| c.gcp_interval_ms), Some(100));
    assert_eq!(layout.storage.redo.files, 4);
    let node = |n| signals::NodeId::new(n).expect("node id");
    assert_eq!(layout.data_dir(node(2)), Some(Path::new("/tmp/blockwire-data/node-2")));
    let text = std::fs::read_to_string(&path).unwrap();
    let kinds = engine.kinds();
    let refused = |bad: String| {
        let config = node::config::Config::parse_with(&bad, Path::new("x.toml"), &kinds);
        match config {
            Err(e) => e.to_string(),
            Ok(c) => engine::layout::Layout::from_config(&c).expect_err("refused").to_string(),
        }
    };
    let e = refused(text.replace("redo_files = 4", "redo_files = 0"));
    assert!(e.contains("redo_files"), "{e}");
    let e = refused(text.replace("redo_file_bytes = \"64M\"", "redo_file_bytes = \"10K\""));
    assert!(e.contains("redo_file_bytes"), "{e}");
    let e = refused(text.replace("gcp_interval_ms = 100", "gcp_interval_ms = 0"));
    assert!(e.contains("gcp_interval_ms"), "{e}");
    let e = refused(text.replace("data_dir = \"/tmp/blockwire-data/node-2\"\n", ""));
    assert!(e.contains("data_dir") && e.contains("node 2"), "{e}");
    let e = refused(text.replace("[[blocks]]\nkind = \"checkpoint\"\ngcp_interval_ms = 100\n", ""));
    assert!(e.contains("checkpoint"), "{e}");
}
