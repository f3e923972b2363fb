# What `cmake --install` puts where (GNUInstallDirs; on Debian with --prefix /usr the libraries go
# to lib/x86_64-linux-gnu). Components, one Debian package each (cmake/packaging.cmake):
#   Runtime      libimee.so.N.M.P, libimee.so.N                                  (libimee0)
#   Development  public headers, <imee/uapi/linux/imee.h>, libimee.so, libimee.a,
#                CMake package, imee.pc, imee-uapi.pc                             (libimee-dev)
#   Tools        pidlist, pslist, credlist, syscalldmp, imee-bench, man pages     (imee-tools)
#   Python       the module imee                                                  (python3-imee)
# The ImEE agent is not a separate file: its page is embedded in libimee (agent/agent_image.S).
include(CMakePackageConfigHelpers)

set(IMEE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/imee)

install(TARGETS imee_shared EXPORT imeeTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT Runtime NAMELINK_SKIP)
install(TARGETS imee_shared EXPORT imeeTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT Development NAMELINK_ONLY)
install(TARGETS imee imee_uapi EXPORT imeeTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT Development)

# Only the documented public headers: libimee/include/imee/*.hpp (nothing of libimee/src).
install(DIRECTORY ${PROJECT_SOURCE_DIR}/libimee/include/imee
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT Development
  FILES_MATCHING PATTERN "*.hpp")
install(FILES ${PROJECT_SOURCE_DIR}/kernel/include/uapi/linux/imee.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/imee/uapi/linux COMPONENT Development)

install(EXPORT imeeTargets NAMESPACE imee:: DESTINATION ${IMEE_CMAKE_DIR}
  COMPONENT Development)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/imeeConfig.cmake.in
  ${PROJECT_BINARY_DIR}/imeeConfig.cmake INSTALL_DESTINATION ${IMEE_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/imeeConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/imeeConfig.cmake ${PROJECT_BINARY_DIR}/imeeConfigVersion.cmake
  DESTINATION ${IMEE_CMAKE_DIR} COMPONENT Development)

# pkg-config: written at install time, so that its prefix is where the tree is installed
# (`cmake --install --prefix DIR`, or /usr in the Debian packages).
set(IMEE_PC_DIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
set(IMEE_PC_PREFIX "@IMEE_PC_PREFIX@")  # left for the install-time configure_file
foreach(pc imee imee-uapi)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/${pc}.pc.in @ONLY)
  install(CODE "set(IMEE_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    configure_file(\"${PROJECT_BINARY_DIR}/${pc}.pc.in\"
      \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${IMEE_PC_DIR}/${pc}.pc\" @ONLY)
    message(STATUS \"Installing: \$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${IMEE_PC_DIR}/${pc}.pc\")"
    COMPONENT Development)
endforeach()

install(TARGETS pidlist pslist credlist syscalldmp imee-bench
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT Tools)

# Man pages from each tool's --help (help2man), when help2man is there.
find_program(IMEE_HELP2MAN help2man)
if(IMEE_HELP2MAN)
  set(IMEE_MAN_PAGES)
  set(name_pidlist "list the pid of every task of a live Linux guest")
  set(name_pslist "list the tasks of a live Linux guest: pid, ppid, uid, gid, comm")
  set(name_credlist "list the credentials of every task of a live Linux guest")
  set(name_syscalldmp "dump a live Linux guest's system call table")
  set(name_imee-bench "benchmark reads of a live guest through each ImEE backend")
  foreach(tool pidlist pslist credlist syscalldmp imee-bench)
    set(page ${PROJECT_BINARY_DIR}/man/${tool}.1)
    add_custom_command(OUTPUT ${page}.gz
      COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/man
      COMMAND ${IMEE_HELP2MAN} --no-info --no-discard-stderr
              --version-string=${PROJECT_VERSION} --section=1
              --source=ImEE --manual=ImEE "--name=${name_${tool}}" -o ${page}
              $<TARGET_FILE:${tool}>
      COMMAND gzip -9nf ${page}
      DEPENDS ${tool}
      COMMENT "Man page for ${tool}"
      VERBATIM)
    list(APPEND IMEE_MAN_PAGES ${page}.gz)
  endforeach()
  add_custom_target(imee_man ALL DEPENDS ${IMEE_MAN_PAGES})
  install(FILES ${IMEE_MAN_PAGES} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT Tools)
else()
  message(STATUS "help2man not found: no man pages (scripts/install-deps.sh installs it)")
endif()
