fn main() -> std::process::ExitCode {
    engine::cli::main_with(engine::builtin_registry())
}
