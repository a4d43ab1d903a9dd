//! `hamon`: the HA agent and its operator commands.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(hamon::cli::main(&args));
}
