// The "stats" answer: every counter the daemon has, as JSON, and the same
// numbers as Prometheus text exposition (version 0.0.4).  Never contains keys:
// SAs are named by handle, direction and SPI only.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "control/control_plane.h"

namespace ov2 {

class Dataplane;

// Builds the stats object: {"dataplane":{"running":bool,...}, "worker":{name:n},
// "per_queue":[...], "xsk":{"wire":[...],"nic":[...]}, "bpf":{"wire":{...},
// "tx":{...},"deliver":{...},"verdict":{...},"verdict_status":{NDIS name:n}},
// "sas":[{"handle","dir","mode","spi","packets","bytes","errors":{reason:n},
// "next_seq","highest_seq"}]}.  `dataplane` may be null (no --wire): then only
// the SA table (zero counters) and "running":false with a "note".
// verdict_status CRYPTO_SUCCESS is the verdict "accept" count (the BPF status
// map counts failing statuses only).
nlohmann::json stats_json(const ControlPlane& plane, const Dataplane* dataplane);

// Prometheus text exposition of a stats_json() object (metrics ipsecov2_*,
// with # HELP and # TYPE lines).
std::string prometheus_text(const nlohmann::json& stats);

// NDIS name of a CryptoStatus value ("CRYPTO_SUCCESS", ...); "CRYPTO_STATUS_<n>" beyond the enum.
std::string crypto_status_ndis_name(uint32_t status);

}  // namespace ov2
