# The Python module `s0` (included from the top-level CMakeLists.txt when S0_BUILD_PYTHON).
#   build:    build/python/s0/ (the package: __init__.py + the _s0 extension); PYTHONPATH=build/python
#   install:  cmake --install build --component python  (into Debian's
#             /usr/local/lib/python3.X/dist-packages; --prefix DIR for elsewhere)
#   tests:    tests/python/test_*.py, one CTest test per file (python.<name>), run by pytest
# The interpreter is Debian's /usr/bin/python3 unless -DPython_EXECUTABLE=... says otherwise
# (a pyenv/venv python3 first on PATH would otherwise be picked up without numpy).
if(NOT DEFINED Python_EXECUTABLE AND EXISTS /usr/bin/python3)
  set(Python_EXECUTABLE /usr/bin/python3 CACHE FILEPATH "Python interpreter the s0 module is built for")
endif()
find_package(Python 3.8 COMPONENTS Interpreter Development.Module)
if(NOT Python_FOUND)
  message(STATUS "s0 Python module: skipped (no Python headers; Debian: python3-dev)")
  return()
endif()
set(PYBIND11_FINDPYTHON ON)
find_package(pybind11 2.6 CONFIG QUIET)
if(NOT pybind11_FOUND)
  message(STATUS "s0 Python module: skipped (pybind11 not found; Debian: pybind11-dev)")
  return()
endif()
message(STATUS "s0 Python module: building for ${Python_EXECUTABLE} (Python ${Python_VERSION}, pybind11 ${pybind11_VERSION})")

set(S0_PY_OUT ${CMAKE_BINARY_DIR}/python/s0)
file(GLOB S0_PY_BINDINGS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/python/src/*.cpp)
# NO_EXTRAS: no LTO and no stripping (a link-time-optimised link of all of s0 takes minutes).
pybind11_add_module(s0_python MODULE NO_EXTRAS ${S0_PY_BINDINGS})
set_target_properties(s0_python PROPERTIES OUTPUT_NAME _s0 LIBRARY_OUTPUT_DIRECTORY ${S0_PY_OUT}
  INSTALL_RPATH_USE_LINK_PATH ON)
target_link_libraries(s0_python PRIVATE s0lib)
target_compile_options(s0_python PRIVATE -Wall -Wextra -Wno-unused-parameter)

# The package's pure-Python files, copied next to the extension.
file(GLOB S0_PY_FILES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/python/s0/*.py)
set(S0_PY_COPIES)
foreach(f ${S0_PY_FILES})
  get_filename_component(name ${f} NAME)
  add_custom_command(OUTPUT ${S0_PY_OUT}/${name} COMMAND ${CMAKE_COMMAND} -E copy ${f} ${S0_PY_OUT}/${name}
    DEPENDS ${f} VERBATIM)
  list(APPEND S0_PY_COPIES ${S0_PY_OUT}/${name})
endforeach()
add_custom_target(s0_python_files ALL DEPENDS ${S0_PY_COPIES})
add_dependencies(s0_python s0_python_files)

set(S0_PYTHON_INSTALL_DIR "lib/python${Python_VERSION_MAJOR}.${Python_VERSION_MINOR}/dist-packages"
  CACHE STRING "Where `cmake --install build --component python` puts the s0 package (relative to the prefix)")
install(TARGETS s0_python LIBRARY DESTINATION ${S0_PYTHON_INSTALL_DIR}/s0 COMPONENT python)
install(FILES ${S0_PY_FILES} DESTINATION ${S0_PYTHON_INSTALL_DIR}/s0 COMPONENT python)

if(S0_BUILD_TESTS)
  execute_process(COMMAND ${Python_EXECUTABLE} -c "import pytest, numpy" RESULT_VARIABLE S0_PYTEST_MISSING
    OUTPUT_QUIET ERROR_QUIET)
  if(S0_PYTEST_MISSING)
    message(WARNING "s0 Python tests: skipped (${Python_EXECUTABLE} lacks pytest or numpy; "
      "Debian: python3-pytest python3-numpy, see scripts/install-deps.sh)")
  else()
    file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/pytest)  # pytest's --basetemp needs its parent
    file(GLOB S0_PY_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/python/test_*.py)
    foreach(t ${S0_PY_TESTS})
      get_filename_component(name ${t} NAME_WE)
      string(REGEX REPLACE "^test_" "" name ${name})
      add_test(NAME python.${name}
        COMMAND ${Python_EXECUTABLE} -m pytest -q -p no:cacheprovider --basetemp=${CMAKE_BINARY_DIR}/pytest/${name} ${t}
        WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
      set_tests_properties(python.${name} PROPERTIES ENVIRONMENT
        "PYTHONPATH=${CMAKE_BINARY_DIR}/python;S0_CLI=$<TARGET_FILE:s0>;S0_SOURCE_DIR=${CMAKE_CURRENT_SOURCE_DIR};S0_BUILD_DIR=${CMAKE_BINARY_DIR};S0_PYTHON=${Python_EXECUTABLE};OMP_NUM_THREADS=1")
    endforeach()
  endif()
endif()
