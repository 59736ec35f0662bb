//! The mock gateway: the mock protocol (see the crate docs) over tcp or websocket.
//!
//! `mock-server --transport ws --listen 127.0.0.1:8000`

use clap::Parser;
use kim_examples::sessions::ProtocolAcceptor;
use kim_examples::{
    init_tracing, install_allocator, serve, serve_with, LogState, MockAcceptor, MockListener,
    Presence, ServerArgs, Started,
};

/// How sessions are spoken on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Encoding {
    /// The mock protocol's text form: `<id> session`, `ok <token>`, `/ack <seq>`.
    Mock,
    /// PROTOCOL.md's default encoding, as kim's client libraries speak it: over websocket the
    /// user id is the `token` query parameter and a session is asked for with `session=1` or
    /// `resume=<token>&last=<seq>`; over TCP frames the login frame is `<id> #session` or
    /// `<id> #resume <token> <seq>`; then `#ok <token>`, `<seq> <payload>`, `#ack <seq>`,
    /// and the client's messages are `<n> <payload>`.
    Default,
}

#[derive(Debug, Parser)]
#[command(about = "kim's mock gateway: login with a user id, echo, and @<id> pushes")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Tell every other channel `<id> joined` and `<id> left` (text frames) as channels log in
    /// and go.
    #[arg(long)]
    presence: bool,
    /// The encoding of sessions.
    #[arg(long, value_enum, default_value_t = Encoding::Mock)]
    encoding: Encoding,
}

fn main() -> anyhow::Result<()> {
    install_allocator();
    let args = Args::parse();
    init_tracing();
    let rt = args.server.runtime()?;
    if args.encoding == Encoding::Default {
        let server = &args.server;
        return rt.block_on(serve_with(
            server,
            server.ws_upgrader(),
            ProtocolAcceptor,
            MockListener,
            LogState,
            kim_core::DefaultCodec,
            std::future::ready(Ok(())),
            |_: &Started<'_>| Ok(()),
        ));
    }
    if args.presence {
        rt.block_on(serve(&args.server, MockAcceptor, MockListener, Presence))
    } else {
        rt.block_on(serve(&args.server, MockAcceptor, MockListener, LogState))
    }
}
