//! `blockwire-datanode --config FILE --node-id N`: runs one data node of a cluster file with the
//! engine's blocks (dictionary, storage, coordinator) and the system blocks, wherever the
//! file's `[[blocks]]` place them. `blockwire-datanode stats ...` prints a running node's
//! counters. See [`node::cli`] for the start-up and the ordered stop.

fn main() -> std::process::ExitCode {
    node::cli::main("blockwire-datanode", &|path| {
        let engine = engine::Engine::new();
        let (config, _layout) = engine::load_config(&engine, path)?;
        Ok((config, engine.kinds()))
    })
}
