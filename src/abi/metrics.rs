//! llm-edge's stats, defined once per filter config and updated per stream.
//!
//! They appear in Envoy's `/stats` under the module's `metrics_namespace` (`dynamicmodulescustom`
//! unless the config sets one), such as `llm_edge.requests_total.endpoint.chat_completions.outcome.ok`.

use std::ffi::c_void;

use crate::host::stats::{Counter, Histogram};

use super::ffi::{self, Buffer, FilterEnvoyPtr};

/// The ids Envoy gave llm-edge's stats; `None` where defining one failed (it is then skipped).
#[derive(Debug, Default)]
pub(super) struct MetricIds {
    counters: [Option<usize>; Counter::ALL.len()],
    histograms: [Option<usize>; Histogram::ALL.len()],
}

impl MetricIds {
    /// Defines every stat on the config being created.
    ///
    /// # Safety
    /// `config` must be the Envoy config pointer passed to the running `config_new`.
    pub(super) unsafe fn define(config: *mut c_void) -> Self {
        let mut ids = Self::default();
        for counter in Counter::ALL {
            let labels: Vec<Buffer> = counter
                .labels()
                .iter()
                .map(|l| Buffer::of(l.as_bytes()))
                .collect();
            // SAFETY: `config` is the config pointer of the running config_new, on the main
            // thread (`define`'s contract); `labels` holds `labels.len()` views of live names,
            // and Envoy copies them and the name; `id` points to a live local.
            ids.counters[counter.index()] = define_with(counter.name(), |name, id| unsafe {
                ffi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                    config,
                    name,
                    labels.as_ptr(),
                    labels.len(),
                    id,
                )
            });
        }
        for histogram in Histogram::ALL {
            // SAFETY: as for the counters; (null, 0) is no labels.
            ids.histograms[histogram.index()] = define_with(histogram.name(), |name, id| unsafe {
                ffi::envoy_dynamic_module_callback_http_filter_config_define_histogram(
                    config,
                    name,
                    std::ptr::null(),
                    0,
                    id,
                )
            });
        }
        ids
    }

    /// Adds `value` to `counter` with these label values.
    ///
    /// # Safety
    /// `filter` must be the live Envoy filter pointer of the running hook.
    pub(super) unsafe fn count(
        &self,
        filter: FilterEnvoyPtr,
        counter: Counter,
        labels: &[&str],
        value: u64,
    ) {
        let Some(id) = self.counters[counter.index()] else {
            return;
        };
        let labels: Vec<Buffer> = labels.iter().map(|l| Buffer::of(l.as_bytes())).collect();
        // SAFETY: `filter` is the running hook's filter pointer, on its worker (`count`'s
        // contract); `labels` holds `labels.len()` views of live strings, copied during the call.
        unsafe {
            ffi::envoy_dynamic_module_callback_http_filter_increment_counter(
                filter,
                id,
                labels.as_ptr(),
                labels.len(),
                value,
            );
        }
    }

    /// Records `value` in `histogram`.
    ///
    /// # Safety
    /// `filter` must be the live Envoy filter pointer of the running hook.
    pub(super) unsafe fn record(&self, filter: FilterEnvoyPtr, histogram: Histogram, value: u64) {
        let Some(id) = self.histograms[histogram.index()] else {
            return;
        };
        // SAFETY: `filter` is the running hook's filter pointer, on its worker (`record`'s
        // contract); (null, 0) is no labels.
        unsafe {
            ffi::envoy_dynamic_module_callback_http_filter_record_histogram_value(
                filter,
                id,
                std::ptr::null(),
                0,
                value,
            );
        }
    }
}

/// Runs one define call and returns the id it wrote, logging a failure.
fn define_with(name: &str, define: impl FnOnce(Buffer, *mut usize) -> u32) -> Option<usize> {
    let mut id = 0usize;
    let result = define(Buffer::of(name.as_bytes()), &mut id);
    if result == ffi::metrics_result::SUCCESS {
        Some(id)
    } else {
        log::warn!(
            "llm_edge: Envoy refused to define the stat {name} (result {result}); it is skipped"
        );
        None
    }
}
