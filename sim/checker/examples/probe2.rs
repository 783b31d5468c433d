fn main() {
    let args: Vec<String> = std::env::args().collect();
    let files: Vec<std::path::PathBuf> = args[2..].iter().map(Into::into).collect();
    let code = checker::run_check(&args[1], None, &files, &mut std::io::stdout());
    println!("exit {code}");
}
