//! `faaswap serve`: the runtime and its HTTP API.

use super::CliError;
use crate::config::ServeArgs;
use crate::runtime::StartError;

pub fn run(args: ServeArgs) -> Result<(), CliError> {
    let config = args.resolve()?;
    let (addr, note) = config.listen_addr()?;
    if let Some(note) = note {
        eprintln!("faaswap: {note}");
    }
    let listener =
        std::net::TcpListener::bind(&addr).map_err(|source| StartError::Listen { addr: addr.clone(), source })?;
    eprintln!(
        "faaswap serving on http://{} ({} × {:?}, {} MiB weight pool each, state in {})",
        listener.local_addr().map_or_else(|_| config.addr.clone(), |a| a.to_string()),
        config.devices.count,
        config.devices.kind,
        config.devices.pool_bytes >> 20,
        config.state_dir.display()
    );
    actix_rt::System::new().block_on(async move {
        let server = crate::server::start(config, listener)?;
        server.await.map_err(CliError::Output)
    })
}
