//! The proxy-wasm ABI 0.2.1 host calls this filter uses, each wrapped so that a failing call
//! is an `Err`, never a panic. Buffers the host hands back are freed on drop.

use std::ptr::null_mut;

pub type Status = u32;
const OK: Status = 0;
const NOT_FOUND: Status = 1;
pub const CAS_MISMATCH: Status = 8;

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum MapType {
    RequestHeaders = 0,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
}

const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> Status;
    fn proxy_get_log_level(return_level: *mut u32) -> Status;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> Status;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize)
        -> Status;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> Status;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> Status;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> Status;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> Status;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> Status;
    fn proxy_record_metric(metric_id: u32, value: u64) -> Status;
    fn proxy_set_tick_period_milliseconds(period: u32) -> Status;
}

/// Memory the host allocated through `proxy_on_memory_allocate` and handed to us.
pub struct HostBuffer {
    data: *mut u8,
    len: usize,
}

impl HostBuffer {
    fn new(data: *mut u8, len: usize) -> Self {
        if data.is_null() {
            HostBuffer { data, len: 0 }
        } else {
            HostBuffer { data, len }
        }
    }

    pub fn bytes(&self) -> &[u8] {
        if self.data.is_null() {
            return &[];
        }
        // SAFETY: the host wrote `len` bytes at `data`, allocated by `allocate` below.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        if !self.data.is_null() {
            // SAFETY: allocated by `allocate(len)` as a Vec<u8> of capacity `len`.
            drop(unsafe { Vec::from_raw_parts(self.data, self.len, self.len) });
        }
    }
}

/// The allocator the host calls to hand us data (`proxy_on_memory_allocate`).
pub fn allocate(size: usize) -> *mut u8 {
    let mut memory: Vec<u8> = Vec::with_capacity(size);
    let pointer = memory.as_mut_ptr();
    std::mem::forget(memory);
    pointer
}

fn check(status: Status) -> Result<(), Status> {
    if status == OK {
        Ok(())
    } else {
        Err(status)
    }
}

/// Writes one line to the host's log at a proxy-wasm level (0 trace … 5 critical).
pub fn log(level: u32, message: &str) {
    // SAFETY: pointer and length describe a live string.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// The host's current log level (0 trace … 5 critical).
pub fn log_level() -> Result<u32, Status> {
    let mut level = 0u32;
    // SAFETY: the out-pointer is valid for writes.
    check(unsafe { proxy_get_log_level(&mut level) }).map(|()| level)
}

pub fn plugin_configuration(size: usize) -> Result<HostBuffer, Status> {
    let (mut data, mut len) = (null_mut(), 0);
    // SAFETY: out-pointers are valid for writes.
    let status = unsafe {
        proxy_get_buffer_bytes(BUFFER_PLUGIN_CONFIGURATION, 0, size, &mut data, &mut len)
    };
    let buffer = HostBuffer::new(data, len);
    check(status).map(|()| buffer)
}

/// Every header of the map in one host call, in the serialized pairs format.
pub fn header_pairs(map: MapType) -> Result<HostBuffer, Status> {
    let (mut data, mut len) = (null_mut(), 0);
    // SAFETY: out-pointers are valid for writes.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut len) };
    let buffer = HostBuffer::new(data, len);
    check(status).map(|()| buffer)
}

/// Whether the map holds a header `name` (lowercase). An absent header costs one host call and
/// no allocation; a present one is copied into the VM (and dropped here).
pub fn has_header(map: MapType, name: &[u8]) -> Result<bool, Status> {
    header_value(map, name).map(|value| value.is_some())
}

/// The value of header `name` (lowercase; the first of repeated ones), `None` if absent.
pub fn header_value(map: MapType, name: &[u8]) -> Result<Option<HostBuffer>, Status> {
    let (mut data, mut len) = (null_mut(), 0);
    // SAFETY: pointer and length describe a live slice; out-pointers are valid for writes.
    let status = unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut len)
    };
    let value = HostBuffer::new(data, len);
    match status {
        OK => Ok(Some(value)),
        NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

pub fn replace_header(map: MapType, name: &[u8], value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe live slices.
    check(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn add_header(map: MapType, name: &[u8], value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe live slices.
    check(unsafe {
        proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_header(map: MapType, name: &[u8]) -> Result<(), Status> {
    // SAFETY: pointer and length describe a live slice.
    check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// A host property such as `node.metadata.NAMESPACE`; `Ok(None)` when absent.
pub fn property(path: &[&str]) -> Result<Option<HostBuffer>, Status> {
    let serialized = path.join("\0");
    let (mut data, mut len) = (null_mut(), 0);
    // SAFETY: pointers are valid; out-pointers are valid for writes.
    let status =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut len) };
    let buffer = HostBuffer::new(data, len);
    match status {
        OK => Ok(Some(buffer)),
        NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

pub fn now_nanos() -> Result<u64, Status> {
    let mut now = 0u64;
    // SAFETY: the out-pointer is valid for writes.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut now) }).map(|()| now)
}

/// A shared-data value and its CAS token; `Ok(None)` when the key is absent.
pub fn shared_data(key: &str) -> Result<Option<(HostBuffer, u32)>, Status> {
    let (mut data, mut len, mut cas) = (null_mut(), 0, 0u32);
    // SAFETY: pointers are valid; out-pointers are valid for writes.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut len, &mut cas) };
    let buffer = HostBuffer::new(data, len);
    match status {
        OK => Ok(Some((buffer, cas))),
        NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe live slices.
    check(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Answers the request from the proxy. `grpc_status` < 0 means a plain HTTP reply.
pub fn send_local_response(
    status: u32,
    details: &str,
    body: &[u8],
    serialized_headers: &[u8],
    grpc_status: i32,
) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe live slices.
    check(unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            serialized_headers.as_ptr(),
            serialized_headers.len(),
            grpc_status,
        )
    })
}

/// Sets filter state `wasm.<name>` (what access logs read with `%FILTER_STATE(wasm.<name>:PLAIN)%`).
pub fn set_filter_state(name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe live slices.
    check(unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

const METRIC_COUNTER: u32 = 0;
const METRIC_GAUGE: u32 = 1;

pub fn define_counter(name: &str) -> Result<u32, Status> {
    define_metric(METRIC_COUNTER, name)
}

pub fn define_gauge(name: &str) -> Result<u32, Status> {
    define_metric(METRIC_GAUGE, name)
}

fn define_metric(kind: u32, name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: pointer and length describe a live string; the out-pointer is valid.
    check(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) }).map(|()| id)
}

pub fn set_gauge(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: plain values.
    check(unsafe { proxy_record_metric(id, value) })
}

/// A numeric host property (Envoy encodes integers as 8 bytes, little endian).
pub fn u64_property(path: &[&str]) -> Option<u64> {
    let buffer = property(path).ok().flatten()?;
    Some(u64::from_le_bytes(buffer.bytes().try_into().ok()?))
}

pub fn increment_counter(id: u32, by: u64) -> Result<(), Status> {
    let by = i64::try_from(by).unwrap_or(i64::MAX);
    // SAFETY: plain values.
    check(unsafe { proxy_increment_metric(id, by) })
}

/// Asks for `proxy_on_tick` on the current root context every `period_ms`.
pub fn set_tick_period(period_ms: u32) -> Result<(), Status> {
    // SAFETY: plain value.
    check(unsafe { proxy_set_tick_period_milliseconds(period_ms) })
}
