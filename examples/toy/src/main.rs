//! `relnet-toy`: relnet's command line with the toy method, evaluator, backbone and dataset registered.

fn main() -> std::process::ExitCode {
    relnet_toy::register();
    let code = relnet_cli::run(std::env::args_os(), &mut std::io::stdout(), &mut std::io::stderr());
    std::process::ExitCode::from(code)
}
