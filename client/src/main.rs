//! `illumitunnel`: the client. (Skeleton.)

mod status;

fn main() {}
