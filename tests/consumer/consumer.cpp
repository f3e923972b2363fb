// The consumer test's program: a Linux guest's banner, then "pid ppid comm" per task, read
// through an installed libimee's LinuxSession.
//   consumer (--pid PID | --ram FILE) PROFILE
#include <cstdio>
#include <imee/linux.hpp>
#include <imee/linux_profile.hpp>
#include <imee/linux_session.hpp>
#include <string>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: consumer (--pid PID | --ram FILE) PROFILE\n");
    return 2;
  }
  try {
    imee::TargetSpec spec;
    if (std::string(argv[1]) == "--pid")
      spec.qemu_pid = std::stoi(argv[2]);
    else
      spec.ram_path = argv[2];
    auto s = imee::LinuxSession::open(spec, imee::LinuxProfile::load(argv[3]), "soft");
    std::printf("%s", s->cstring(s->symbol("linux_banner"), 512).value().c_str());
    for (const imee::Task& t : imee::read_tasks(*s))
      std::printf("%d %d %s\n", t.pid, t.ppid, t.comm.c_str());
  } catch (const imee::Exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
  return 0;
}
