//! Settings of lagbalance's binaries and examples: the `--help` rule every flag parser
//! applies.

/// Whether `args` ask for help: an argument that is exactly `--help` or `-h`, wherever it
/// stands. Checked before any other parsing, so help works next to flags that are missing or
/// wrong; a value that really is `-h` can be given as `--flag=-h`.
pub fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn help_is_asked_by_an_exact_argument_anywhere() {
        assert!(wants_help(&args(&["--help"])));
        assert!(wants_help(&args(&["status", "--group", "g", "-h"])));
        assert!(wants_help(&args(&["--group", "--help"])));
        assert!(!wants_help(&args(&[])));
        assert!(!wants_help(&args(&["--group=-h", "--helpful"])));
    }
}
