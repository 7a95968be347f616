mod alloc_tuning;

fn main() -> std::process::ExitCode {
    alloc_tuning::tune_for_tensors();
    let code = relnet_cli::run(std::env::args_os(), &mut std::io::stdout(), &mut std::io::stderr());
    std::process::ExitCode::from(code)
}
