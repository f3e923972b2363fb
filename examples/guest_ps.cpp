// Links libimee: prints a Linux guest's banner and its process list (pid, ppid, comm).
//
//   guest_ps (--pid QEMU_PID | --ram FILE) PROFILE.json [BACKEND]
//
// Build against an installed libimee:  find_package(imee) + target_link_libraries(... imee::imee)
// or  c++ -std=c++20 guest_ps.cpp $(pkg-config --cflags --libs imee)
#include <cstdio>
#include <imee/linux.hpp>
#include <imee/linux_session.hpp>
#include <string>

int main(int argc, char** argv) {
  if (argc < 4 || (std::string(argv[1]) != "--pid" && std::string(argv[1]) != "--ram")) {
    std::fprintf(stderr, "usage: %s (--pid QEMU_PID | --ram FILE) PROFILE.json [BACKEND]\n",
                 argv[0]);
    return 2;
  }
  try {
    imee::TargetSpec target;
    if (std::string(argv[1]) == "--pid")
      target.qemu_pid = std::stoi(argv[2]);
    else
      target.ram_path = argv[2];
    // Maps the target's RAM, finds the kernel (KASLR, paging mode), builds the backend.
    auto session = imee::LinuxSession::open(target, imee::LinuxProfile::load(argv[3]),
                                            argc > 4 ? argv[4] : "soft");

    // Every read walks the guest's page tables as they are now; value() throws on a fault.
    std::printf("%s", session->cstring(session->symbol("linux_banner"), 256).value().c_str());
    for (const imee::Task& t : imee::read_tasks(*session))
      std::printf("%d %d %s\n", t.pid, t.ppid, t.comm.c_str());
  } catch (const imee::Exception& e) {  // setup problems and (ReadFailure) failed reads
    std::fprintf(stderr, "guest_ps: %s\n", e.what());
    return 1;
  }
  return 0;
}
