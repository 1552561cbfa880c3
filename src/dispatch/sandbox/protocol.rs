//! What the parent and a render worker say to each other over their socket: a request
//! (the templates and what they see), then one result per template up to the first failure,
//! then whether the worker serves on.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use super::RenderInput;

/// The request a worker reads: each part length-prefixed (u32, little-endian), after the
/// whole request's length (u64).
pub(super) fn encode(sources: &[&str], input: RenderInput<'_>) -> Vec<u8> {
    let parts = 2 + sources.len() + 2 + input.events.len();
    let size: usize = sources
        .iter()
        .chain(input.events)
        .map(|s| s.len())
        .sum::<usize>()
        + input.webhook_name.len()
        + input.webhook_type.len()
        + 4 * (parts + 2);
    let mut out = Vec::with_capacity(size + 8);
    out.extend_from_slice(&0u64.to_le_bytes());
    let count = |out: &mut Vec<u8>, n: usize| out.extend_from_slice(&(n as u32).to_le_bytes());
    count(&mut out, sources.len());
    for part in sources
        .iter()
        .chain([&input.webhook_name, &input.webhook_type])
    {
        count(&mut out, part.len());
        out.extend_from_slice(part.as_bytes());
    }
    count(&mut out, input.events.len());
    for event in input.events {
        count(&mut out, event.len());
        out.extend_from_slice(event.as_bytes());
    }
    let length = (out.len() - 8) as u64;
    out[..8].copy_from_slice(&length.to_le_bytes());
    out
}

/// A request as the worker reads it back.
pub(super) struct Request<'a> {
    pub(super) sources: Vec<&'a str>,
    pub(super) webhook_name: &'a str,
    pub(super) webhook_type: &'a str,
    pub(super) events: Vec<&'a str>,
}

pub(super) fn decode(mut bytes: &[u8]) -> Option<Request<'_>> {
    fn count(bytes: &mut &[u8]) -> Option<usize> {
        let (head, rest) = bytes.split_at_checked(4)?;
        *bytes = rest;
        Some(u32::from_le_bytes(head.try_into().ok()?) as usize)
    }
    fn part<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
        let len = count(bytes)?;
        let (head, rest) = bytes.split_at_checked(len)?;
        *bytes = rest;
        std::str::from_utf8(head).ok()
    }
    let sources = (0..count(&mut bytes)?)
        .map(|_| part(&mut bytes))
        .collect::<Option<Vec<_>>>()?;
    let webhook_name = part(&mut bytes)?;
    let webhook_type = part(&mut bytes)?;
    let events = (0..count(&mut bytes)?)
        .map(|_| part(&mut bytes))
        .collect::<Option<Vec<_>>>()?;
    Some(Request {
        sources,
        webhook_name,
        webhook_type,
        events,
    })
}

/// A result in the answer: a tag byte, a little-endian u32 length, the text.
pub(super) const RENDERED: u8 = 0;
pub(super) const FAILED: u8 = 1;
/// After the results, one byte: whether the worker serves on or leaves.
pub(super) const SERVES_ON: u8 = 0;
pub(super) const LEAVES: u8 = 1;

pub(super) fn read_request(channel: &mut UnixStream) -> Option<Vec<u8>> {
    let mut length = [0u8; 8];
    channel.read_exact(&mut length).ok()?;
    let length = usize::try_from(u64::from_le_bytes(length)).ok()?;
    let mut request = Vec::new();
    request.try_reserve_exact(length).ok()?;
    request.resize(length, 0);
    channel.read_exact(&mut request).ok()?;
    Some(request)
}

pub(super) fn write_result(channel: &mut UnixStream, tag: u8, text: &str) -> std::io::Result<()> {
    let len = u32::try_from(text.len()).map_err(std::io::Error::other)?;
    let mut head = [tag, 0, 0, 0, 0];
    head[1..].copy_from_slice(&len.to_le_bytes());
    channel.write_all(&head)?;
    channel.write_all(text.as_bytes())
}
