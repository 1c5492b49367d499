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
    // A pool of 0 is sized at start-up from the GPU's free memory (the log gives the figure).
    let pool = match config.devices.pool_bytes {
        0 => "a weight pool of most of the free memory each".to_string(),
        b => format!("{} MiB weight pool each", b >> 20),
    };
    eprintln!(
        "faaswap serving on http://{} ({} × {:?}, {pool}, {} HTTP workers, state in {})",
        listener.local_addr().map_or_else(|_| config.addr.clone(), |a| a.to_string()),
        config.devices.count,
        config.devices.kind,
        config.http_workers,
        config.state_dir.display()
    );
    actix_rt::System::new().block_on(async move {
        let server = crate::server::start(config, listener)?;
        server.await.map_err(CliError::Output)
    })
}
