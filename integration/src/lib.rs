//! Test-broker harness and checkers shared by the integration tests.
