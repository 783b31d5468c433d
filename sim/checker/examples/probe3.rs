use checker::read::Format;
use checker::{Budget, ModelKind, check_history};
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let model: ModelKind = std::env::args().nth(2).unwrap().parse().unwrap();
    let n: usize = std::env::args().nth(3).unwrap_or("20".into()).parse().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let history = Format::from_path(std::path::Path::new(&path)).unwrap().parse(&text).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(check_history(model, &history, Budget::default()).unwrap());
    }
    println!("{:?} per run", t.elapsed() / n as u32);
}
