//! `blockwire-node`: a data node with the runtime's system blocks only (echo, statistics), for
//! the runtime's own tests and benchmarks. The engine's `blockwire-datanode` adds the engine
//! blocks; both share [`node::cli`].

fn main() -> std::process::ExitCode {
    node::cli::main("blockwire-node", &node::cli::system_loader)
}
