use checker::read::Format;
use checker::{Budget, ModelKind, check_history};
fn main() {
    let model: ModelKind = std::env::args().nth(1).unwrap().parse().unwrap();
    for path in std::env::args().skip(2) {
        let text = std::fs::read_to_string(&path).unwrap();
        let history = Format::from_path(std::path::Path::new(&path)).unwrap().parse(&text).unwrap();
        let v = check_history(model, &history, Budget::default()).unwrap();
        let mut lo = 0u64;
        let mut hi = 1u64 << 40;
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            match check_history(model, &history, Budget::steps(mid)).unwrap() {
                checker::Verdict::Unknown { .. } => lo = mid,
                _ => hi = mid,
            }
        }
        let t = std::time::Instant::now();
        check_history(model, &history, Budget::default()).unwrap();
        println!("{path} steps={hi} {:?} {}", t.elapsed(), v.name());
    }
}
