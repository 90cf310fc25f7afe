//! rpcgate's request path (in progress).
