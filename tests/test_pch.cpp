// Builds the precompiled header every test suite shares (tests/CMakeLists.txt: ov2_test_pch).
