# CPack: Debian packages, one per install component (cmake/install.cmake).
#   cpack -G DEB --config build/CPackConfig.cmake   (scripts/package-check.sh builds and tests them)
set(CPACK_PACKAGE_NAME imee)
set(CPACK_PACKAGE_VENDOR "ImEE project")
set(CPACK_PACKAGE_CONTACT "ImEE project <imee@localhost>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "ImEE: read a live KVM guest's memory from the host")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_GENERATOR DEB)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # dpkg-shlibdeps: libbpf1, liblzma5, libstdc++6, ...
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION misc)
set(CPACK_STRIP_FILES ON)  # the build is RelWithDebInfo; the packages carry no debug info
set(CPACK_COMPONENTS_ALL Runtime Development Tools)

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME libimee${PROJECT_VERSION_MAJOR})
set(CPACK_COMPONENT_RUNTIME_DESCRIPTION "ImEE library: guest memory access for KVM/QEMU guests")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)

set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_NAME libimee-dev)
set(CPACK_COMPONENT_DEVELOPMENT_DESCRIPTION
    "ImEE library: headers, static library, CMake package, pkg-config files")
set(CPACK_COMPONENT_DEVELOPMENT_DEPENDS Runtime)
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_SECTION libdevel)
# libimee.a's dependencies, for static linking (imee.pc's Requires.private, imeeConfig.cmake).
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_DEPENDS
    "libbpf-dev, liblzma-dev, zlib1g-dev, libzstd-dev, pkg-config")

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME imee-tools)
set(CPACK_COMPONENT_TOOLS_DESCRIPTION
    "ImEE tools: pidlist, pslist, credlist, syscalldmp and imee-bench for live Linux guests")
# Debian's own package pslist ships /usr/bin/pslist.
set(CPACK_DEBIAN_TOOLS_PACKAGE_CONFLICTS pslist)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION admin)

if(IMEE_BUILD_PYTHON)
  list(APPEND CPACK_COMPONENTS_ALL Python)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-imee)
  set(CPACK_COMPONENT_PYTHON_DESCRIPTION "ImEE: Python 3 module imee")
  set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS "python3 (>= 3.11), python3 (<< 3.12)")
endif()

include(CPack)
