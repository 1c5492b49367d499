//! Whether a request's client is still connected. actix-web notices a closed connection only
//! when it writes to it (actix/actix-web#1313, #3462), so a handler that answers with one body
//! after a long wait — a non-streamed generation — would run to its end for nobody. Each
//! connection keeps a duplicate of its socket, and such a handler peeks at it: an orderly close
//! reads as end of stream, a reset as an error, while a connected client that is waiting sends
//! nothing (HTTP/1.1 clients send their next request after the response).

use std::any::Any;
use std::io::ErrorKind;
use std::net::TcpStream;

use actix_web::dev::Extensions;
use actix_web::HttpRequest;

/// A connection's socket, duplicated (the same connection; closed with the connection's
/// extensions).
pub struct ClientSocket(TcpStream);

/// `HttpServer::on_connect`: keeps a duplicate of each plain TCP connection's socket (on Unix;
/// elsewhere a departed client is noticed as actix-web notices it).
#[cfg(not(unix))]
pub fn on_connect(_: &dyn Any, _: &mut Extensions) {}

/// `HttpServer::on_connect`: keeps a duplicate of each plain TCP connection's socket.
#[cfg(unix)]
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    use std::os::fd::AsFd;
    let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    match stream.as_fd().try_clone_to_owned() {
        // The duplicate shares the socket's flags: non-blocking, as the server's is.
        Ok(fd) => {
            ext.insert(ClientSocket(TcpStream::from(fd)));
        }
        Err(e) => tracing::debug!("no disconnect detection for a connection: {e}"),
    }
}

impl ClientSocket {
    /// The socket of `req`'s connection, when it has one (plain TCP).
    pub fn of(req: &HttpRequest) -> Option<&ClientSocket> {
        req.conn_data::<ClientSocket>()
    }

    /// Whether the client closed or reset the connection.
    pub fn gone(&self) -> bool {
        let mut byte = [0u8; 1];
        match self.0.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => false,
            Err(_) => true,
        }
    }
}
