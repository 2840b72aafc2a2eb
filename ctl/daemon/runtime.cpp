#include "daemon/runtime.h"

#include "common/error.h"
#include "control/log.h"

namespace ov2 {

Runtime::Runtime(const DaemonConfig& config) {
  if (config.engine != "afxdp" && config.engine != "nic" && config.engine != "auto")
    fail(ErrorCode::InvalidArgument, "--engine must be afxdp, nic or auto, not '" + config.engine + "'");
  if (config.nic_offload != "crypto" && config.nic_offload != "packet")
    fail(ErrorCode::InvalidArgument, "--nic-offload must be crypto or packet, not '" + config.nic_offload + "'");
  const auto offload = config.nic_offload == "packet" ? xfrm::OffloadKind::Packet : xfrm::OffloadKind::Crypto;
  if (config.engine == "nic") {
    // SAs go to the wire NIC through XFRM device offload; no AF_XDP data plane.
    if (config.wire_interfaces.size() != 1)
      fail(ErrorCode::InvalidArgument, "--engine nic needs the offload NIC in --wire");
    programs_ = std::make_unique<BpfPrograms>(BpfPrograms::Options{0, config.verdict_mark});
    engine_ = std::make_unique<AfXdpEngine>(*programs_, nullptr, nullptr);
    selected_ = std::make_unique<NicEngine>(
        config.wire_interfaces.front(), [](const std::string& m) { log(LogLevel::Warn, m); }, offload);
    log(LogLevel::Info, "engine nic: SAs go to " + config.wire_interfaces.front() + " through XFRM device offload (" +
                            config.nic_offload + " offload)");
    return;
  }
  start_dataplane(config);
  if (config.engine == "auto") {
    WarningSink warn = [](const std::string& m) { log(LogLevel::Info, m); };
    std::unique_ptr<NicEngine> nic;
    if (!config.wire_interfaces.empty()) {
      try {
        nic = std::make_unique<NicEngine>(config.wire_interfaces.front(), warn, offload);
        if (!nic->capabilities().esp) {
          log(LogLevel::Info, "engine auto: " + config.wire_interfaces.front() +
                                  " has no ESP offload (esp-hw-offload off): every SA goes to the AF_XDP engine");
          nic.reset();
        }
      } catch (const Error& e) {
        log(LogLevel::Info, std::string("engine auto: no NIC engine (") + e.what() + "): every SA goes to AF_XDP");
      }
    }
    selected_ = std::make_unique<AutoEngine>(std::move(nic), *engine_, warn);
  }
}

Runtime::~Runtime() {
  selected_.reset();
  engine_.reset();
  if (dataplane_) dataplane_->stop();  // workers first, then device and programs
  dataplane_.reset();
  if (programs_) programs_->detach_all();
  programs_.reset();
}

void Runtime::start_dataplane(const DaemonConfig& config) {
  WarningSink warn = [](const std::string& m) { log(LogLevel::Warn, m); };
  if (config.wire_interfaces.empty()) {
    programs_ = std::make_unique<BpfPrograms>(BpfPrograms::Options{0, config.verdict_mark});
    engine_ = std::make_unique<AfXdpEngine>(*programs_, nullptr, std::move(warn));
    log(LogLevel::Info, "BPF programs loaded; no wire interface given (--wire): no packet is processed");
    return;
  }
  if (config.wire_interfaces.size() > 1)
    fail(ErrorCode::Unsupported, "one wire interface is supported for now; give one in --wire or [wire] interfaces");
  Dataplane::Options o;
  o.wire_ifname = config.wire_interfaces.front();
  o.offload_dev = config.offload_dev;
  o.queues = config.queues;
  o.cpus = config.worker_cpus;
  o.mtu = config.offload_mtu;
  o.umem_frames = config.umem_frames;
  o.frame_size = config.frame_size;
  o.ring_size = config.rx_ring;
  o.verdict_mark = config.verdict_mark;
  dataplane_ = std::make_unique<Dataplane>(o);
  dataplane_->start();
  engine_ = std::make_unique<AfXdpEngine>(dataplane_->programs(), dataplane_.get(), std::move(warn));
  log(LogLevel::Info, "data plane started: wire " + o.wire_ifname + ", offload device " + o.offload_dev + ", " +
                          std::to_string(o.queues) + " worker(s)");
}

}  // namespace ov2
