/** @type {import('jest').Config} */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/src', '<rootDir>/tests/ts', '<rootDir>/tools'],
  testMatch: ['**/*.test.ts'],
  testTimeout: 60000,
  setupFiles: ['<rootDir>/tests/ts/helpers/jest-env.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { isolatedModules: true }] },
};
