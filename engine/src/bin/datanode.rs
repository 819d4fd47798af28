//! `blockwire-datanode --config FILE --node-id N`: runs one data node of a cluster file with the
//! engine's blocks (dictionary, storage, coordinator) and the system blocks, wherever the
//! file's `[[blocks]]` place them. `blockwire-datanode stats ...` prints a running node's
//! counters. `--initial` empties the node's `data_dir` first. See [`node::cli`] for the
//! start-up and the ordered stop.

fn main() -> std::process::ExitCode {
    node::cli::main("blockwire-datanode", &|path, start| {
        let engine = engine::Engine::new();
        let (config, layout) = engine::load_config(&engine, path)?;
        if let (Some(start), Some(layout)) = (start, &layout) {
            engine::prepare_node(layout, start.node_id, start.initial)?;
        }
        Ok((config, engine.kinds()))
    })
}
