fn main() {
    let name = std::env::args().nth(1).unwrap();
    let sc = lagbalance_sim::by_name(&name).unwrap();
    let r = lagbalance_sim::run(&sc, lagbalance_sim::Strategy::LagBalance, sc.load, true);
    println!("{:?}", r.util_mean.iter().map(|u| (u * 1000.0).round() / 10.0).collect::<Vec<_>>());
    println!("moves {} rounds {} rebalances {}", r.moves, r.rounds, r.rebalances);
}
