# Included from the test section of the top-level CMakeLists.txt: every fuzz harness built with
# fuzz/driver.cpp (a plain main(), any compiler) and one CTest per harness replaying its corpus
# fuzz/corpus/<name>/ (findings kept there as regression inputs).
file(GLOB S0_FUZZ_HARNESSES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_*.cpp)
foreach(src ${S0_FUZZ_HARNESSES})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/driver.cpp)
  target_compile_definitions(${name} PRIVATE S0_FUZZ_SOURCE_DIR="${CMAKE_CURRENT_SOURCE_DIR}")
  target_link_libraries(${name} PRIVATE s0lib)
  string(REGEX REPLACE "^fuzz_" "" short ${name})
  add_test(NAME fuzz_replay.${short}
           COMMAND ${name} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/${short})
  set_tests_properties(fuzz_replay.${short} PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=1")
endforeach()
