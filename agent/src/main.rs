fn main() {
    eprintln!("lagbalance-agent: not implemented yet");
    std::process::exit(2);
}
