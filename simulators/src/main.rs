//! `gridwatch-sim`: run the simulators from the command line.
fn main() {}
